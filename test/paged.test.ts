// The paged KV cache (options.blockTable and options.pageSize, vLLM's and FlashAttention's page
// pools) on every backend, sync and async: k and v are pools [pageCount, pageSize, kvHeads, headDim]
// (whatever options.layout says: it applies to q and out only), and key j of batch item b is row
// j mod pageSize of page blockTable[b·maxBlocks + ⌊j/pageSize⌋].
//
// Each problem is built as a pool with shuffled pages, and the contiguous K and V of the same call
// are gathered from it through the table (keys past the pages an item uses hold other random
// values: no entry covers them). Both calls go into NaN-prefilled out and lse, both are checked
// against the float64 reference (test/reference.ts, on the gathered K and V), and on the same
// backend the paged result must equal the contiguous one bit for bit: the page lookup changes where
// a row is read, not what is computed. Entries past each item's kvLength are −1 or garbage (they are
// never read). Bad paged calls are TypeErrors/RangeErrors naming the argument, thrown by the sync
// functions and rejected by the async ones, out and lse untouched.
// On cuda: in this process where backends() lists it (a GPU); else through the emulated plugin
// (build-tests/libgla_cuda_emulated.so) in a child process, as serving.test.ts does.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MODES, type Mode, attention } from './helpers/call';
import { type Kind, inputLengths } from './helpers/cases';
import { bfloat16Mismatches, emptyRowMismatches, expectMatchesReference } from './helpers/compare';
import { BACKENDS, ROOT, gla } from './helpers/package';
import { randomNonZero, rng, seedOf } from './helpers/random';
import { type ReferenceOptions, type ReferenceResult, referenceAttention, tensorIndex } from './reference';
import {
  type DType, type Precision, base64Of, emulatedCudaSkip, runOnEmulatedCuda, precisionMismatches, tensorValues, truncatedHalfBits,
} from './reliability/support';

// --- Building a paged problem ----------------------------------------------------------------------

/** What the table entries past each item's kvLength hold: they are never read. */
type Unused = 'garbage' | 'minus-one' | 'valid';

interface Paging {
  pageSize: number;
  maxBlocks: number;
  /** Pages of the pool that no used entry names (default 2). */
  extraPages?: number;
  /** Items b > 0 use item 0's pages for their first sharedBlocks blocks (prefix caching). */
  sharedBlocks?: number;
  /** Default 'garbage'. */
  unused?: Unused;
  /** Given as options.kvSeqLen; else not given (maxBlocks·pageSize). */
  kvSeqLen?: number;
}

type PagedOptions = ReferenceOptions & { kvLengths: ArrayLike<number> };

interface Call {
  dtype: DType;
  outDtype: DType;
  precision: Precision;
}

const F32: Call = { dtype: 'float32', outDtype: 'float32', precision: 'float32' };

interface PagedCase {
  name: string;
  kind: Kind;
  /** The call's options without kvSeqLen (see Paging.kvSeqLen). */
  options: PagedOptions;
  paging: Paging;
  /** Scales q and k so that |scaled scores| reach the hundreds. */
  magnitude?: number;
  /** Half-precision calls beside the float32 one. */
  halves?: Call[];
  /** Also run on cuda through the emulated plugin (where a call costs ~0.3-5 s: the small cases). */
  emulated?: boolean;
}

interface PagedProblem {
  /** The contiguous call's options (kvSeqLen explicit): what the reference reads. */
  options: ReferenceOptions;
  /** The paged call's options. */
  pagedOptions: Record<string, unknown>;
  table: Int32Array;
  pageCount: number;
  /** Values (representable in every dtype the case calls with). */
  q: Float32Array;
  kPool: Float32Array;
  vPool: Float32Array;
  /** Gathered from the pools through the table: [batch, kvHeads, kvSeqLen, headDim] in options.layout. */
  k: Float32Array;
  v: Float32Array;
}

/** Never-read entries: −1, the pool's size, the int32 extremes and more. */
const garbageEntry = (index: number, pageCount: number): number =>
  [-1, pageCount, 2147483647, -2147483648, pageCount + (1 << 20), -7][index % 6];

function shuffled(n: number, random: () => number): number[] {
  const order = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [order[i], order[j]] = [order[j], order[i]];
  }
  return order;
}

/** Values a half type holds exactly, so that every dtype's call sees the same numbers. */
function representable(values: Float32Array, dtypes: readonly DType[]): Float32Array {
  let x = values;
  for (const dtype of dtypes) if (dtype !== 'float32') x = tensorValues(dtype, truncatedHalfBits(dtype, x));
  return x;
}

function poolIndex(kvHeads: number, headDim: number, pageSize: number, page: number, r: number, kvh: number, d: number): number {
  return ((page * pageSize + r) * kvHeads + kvh) * headDim + d;
}

/** The contiguous K (or V) of a paged pool: row j of item b is the pool row the table names. */
function gather(
  pool: Float32Array, filler: Float32Array, table: Int32Array, options: ReferenceOptions, pageSize: number, maxBlocks: number,
): Float32Array {
  const { batch, headDim } = options;
  const kvHeads = options.kvHeads ?? options.heads;
  const kvSeqLen = options.kvSeqLen as number;
  const layout = options.layout ?? 'bhsd';
  const out = filler.slice();
  for (let b = 0; b < batch; b++) {
    const used = Math.ceil((options.kvLengths as ArrayLike<number>)[b] / pageSize);
    for (let j = 0; j < Math.min(kvSeqLen, used * pageSize); j++) {
      const page = table[b * maxBlocks + Math.floor(j / pageSize)];
      for (let kvh = 0; kvh < kvHeads; kvh++) {
        for (let d = 0; d < headDim; d++) {
          out[tensorIndex(layout, kvHeads, kvSeqLen, headDim, b, kvh, j, d)] = pool[poolIndex(kvHeads, headDim, pageSize, page, j % pageSize, kvh, d)];
        }
      }
    }
  }
  return out;
}

function buildPaged(name: string, given: PagedOptions, paging: Paging, magnitude = 1, dtypes: readonly DType[] = ['float32']): PagedProblem {
  const random = rng(seedOf(name));
  const { batch, heads, headDim } = given;
  const kvHeads = given.kvHeads ?? heads;
  const { pageSize, maxBlocks } = paging;
  const kvSeqLen = paging.kvSeqLen ?? maxBlocks * pageSize;
  const kvLengths = Array.from(given.kvLengths);
  const used = kvLengths.map((l) => Math.ceil(l / pageSize));
  const shared = paging.sharedBlocks ?? 0;
  const isShared = (b: number, n: number) => b > 0 && n < shared && n < used[0];
  let needed = 0;
  for (let b = 0; b < batch; b++) for (let n = 0; n < used[b]; n++) if (!isShared(b, n)) needed++;
  const pageCount = needed + (paging.extraPages ?? 2);
  const order = shuffled(pageCount, random);
  const table = new Int32Array(batch * maxBlocks);
  let next = 0;
  for (let b = 0; b < batch; b++) {
    for (let n = 0; n < maxBlocks; n++) {
      const index = b * maxBlocks + n;
      if (n < used[b]) table[index] = isShared(b, n) ? table[n] : order[next++];
      else if (paging.unused === 'minus-one' || (paging.unused === 'valid' && pageCount === 0)) table[index] = -1;
      else if (paging.unused === 'valid') table[index] = order[index % pageCount];
      else table[index] = garbageEntry(index, pageCount);
    }
  }
  const options: ReferenceOptions = { ...given, kvSeqLen };
  const poolLength = pageCount * pageSize * kvHeads * headDim;
  const n = inputLengths(options);
  const q = representable(randomNonZero(n.q, random, magnitude), dtypes);
  const kPool = representable(randomNonZero(poolLength, random, magnitude), dtypes);
  const vPool = representable(randomNonZero(poolLength, random), dtypes);
  const kFill = representable(randomNonZero(n.kv, random, magnitude), dtypes);
  const vFill = representable(randomNonZero(n.kv, random), dtypes);
  const pagedOptions: Record<string, unknown> = { ...given, blockTable: table, pageSize };
  if (paging.kvSeqLen !== undefined) pagedOptions.kvSeqLen = paging.kvSeqLen;
  return {
    options, pagedOptions, table, pageCount, q, kPool, vPool,
    k: gather(kPool, kFill, table, options, pageSize, maxBlocks),
    v: gather(vPool, vFill, table, options, pageSize, maxBlocks),
  };
}

/** A tensor of `dtype` holding `values` (exactly representable: see representable). */
function stored(dtype: DType, values: Float32Array): Float32Array | Uint16Array {
  return dtype === 'float32' ? values : truncatedHalfBits(dtype, values);
}

// --- Calling and comparing ---------------------------------------------------------------------------

interface Result {
  out: Float32Array | Uint16Array;
  lse: Float32Array;
}

/** One call into NaN-prefilled out and lse (every element must be written). */
async function call(
  kind: Kind, mode: Mode, q: unknown, k: unknown, v: unknown, options: object, c: Call, backend: string,
): Promise<Result> {
  const o = options as unknown as ReferenceOptions;
  const n = inputLengths(o);
  const out = c.outDtype === 'float32' ? new Float32Array(n.q).fill(NaN) : new Uint16Array(n.q).fill(0x7fff);
  const lse = new Float32Array(n.lse).fill(NaN);
  const dtypeOptions = c.dtype === 'float32' && c.outDtype === 'float32' ? {} : { dtype: c.dtype, outDtype: c.outDtype, precision: c.precision };
  const returned = await attention(kind, mode, q, k, v, { ...options, ...dtypeOptions, out, lse, backend });
  expect(returned).toBe(out);
  return { out, lse };
}

function bitsOf(a: Float32Array | Uint16Array): Uint32Array | Uint16Array {
  return a instanceof Float32Array ? new Uint32Array(a.buffer, a.byteOffset, a.length) : a;
}

/** Where two results differ bit for bit, or null. */
function bitDifference(a: Result, b: Result): string | null {
  for (const key of ['out', 'lse'] as const) {
    const x = bitsOf(a[key]);
    const y = bitsOf(b[key]);
    if (x.length !== y.length) return `${key}: lengths ${x.length} and ${y.length}`;
    for (let i = 0; i < x.length; i++) {
      if (x[i] !== y[i]) return `${key}[${i}] is ${a[key][i]} paged, ${b[key][i]} contiguous (bits ${x[i].toString(16)} vs ${y[i].toString(16)})`;
    }
  }
  return null;
}

/** Where a result departs from the reference within the tolerance of its call (see compare.ts). */
function referenceMismatches(options: ReferenceOptions, reference: ReferenceResult, p: { q: Float32Array; k: Float32Array; v: Float32Array }, r: Result, c: Call): string[] {
  const out = tensorValues(c.outDtype, r.out);
  if (c.precision === 'bfloat16') return bfloat16Mismatches(options, reference, p, out, r.lse, c.outDtype === 'float32' ? 'float32' : c.outDtype);
  return [...precisionMismatches(options, reference, out, r.lse, c.outDtype, 'float32'), ...emptyRowMismatches(options, reference, out)];
}

function checkResult(options: ReferenceOptions, reference: ReferenceResult, p: { q: Float32Array; k: Float32Array; v: Float32Array }, r: Result, c: Call, what: string): void {
  if (c.dtype === 'float32' && c.outDtype === 'float32') {
    try {
      expectMatchesReference(options, reference, r.out as Float32Array, r.lse);
    } catch (error) {
      throw new Error(`${what}: ${(error as Error).message}`);
    }
    return;
  }
  const found = referenceMismatches(options, reference, p, r, c);
  if (found.length > 0) expect.fail(`${what} (${c.dtype} → ${c.outDtype}, precision ${c.precision}): ${found.join('; ')}`);
}

const snapshot = (...arrays: ArrayBufferView[]): string =>
  arrays.map((a) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString('base64')).join('|');

// --- The grid ----------------------------------------------------------------------------------------

const FLOAT16: Call = { dtype: 'float16', outDtype: 'float16', precision: 'float32' };
const BFLOAT16: Call = { dtype: 'bfloat16', outDtype: 'bfloat16', precision: 'bfloat16' };
const BFLOAT16_F32: Call = { dtype: 'bfloat16', outDtype: 'float32', precision: 'float32' };

const CASES: PagedCase[] = [
  {
    name: 'decode, pageSize 16, GQA 4/2, headDim 33, kvLengths [70, 1, 33]', kind: 'full',
    options: { batch: 3, heads: 4, kvHeads: 2, seqLen: 1, headDim: 33, causal: true, kvLengths: [70, 1, 33] },
    paging: { pageSize: 16, maxBlocks: 5 }, halves: [FLOAT16, BFLOAT16],
  },
  {
    name: 'decode, pageSize 1, MQA 3/1, headDim 5, entries past kvLengths −1', kind: 'full',
    options: { batch: 2, heads: 3, kvHeads: 1, seqLen: 1, headDim: 5, causal: true, kvLengths: [13, 7] },
    paging: { pageSize: 1, maxBlocks: 16, unused: 'minus-one' }, emulated: true,
  },
  {
    name: 'chunked prefill: pageSize 3, qLengths [9, 4], kvLengths [40, 17], causal, MQA 4/1, bshd, headDim 67', kind: 'full',
    options: { batch: 2, heads: 4, kvHeads: 1, seqLen: 9, headDim: 67, causal: true, layout: 'bshd', kvLengths: [40, 17], qLengths: [9, 4] },
    paging: { pageSize: 3, maxBlocks: 14 }, emulated: true, halves: [BFLOAT16_F32],
  },
  {
    name: 'pageSize 256: kvLengths [300, 129], a causal chunk of 4, headDim 33', kind: 'full',
    options: { batch: 2, heads: 2, seqLen: 4, headDim: 33, causal: true, kvLengths: [300, 129] },
    paging: { pageSize: 256, maxBlocks: 2, extraPages: 1 },
  },
  {
    name: 'kvSeqLen 45 given (< maxBlocks·pageSize = 64), not causal, seqLen 5', kind: 'full',
    options: { batch: 2, heads: 2, seqLen: 5, headDim: 16, kvLengths: [45, 20] },
    paging: { pageSize: 16, maxBlocks: 4, kvSeqLen: 45 },
  },
  {
    name: 'prefix sharing: items 1 and 2 read item 0’s first 2 pages, decode, GQA 6/2, headDim 64', kind: 'full',
    options: { batch: 3, heads: 6, kvHeads: 2, seqLen: 1, headDim: 64, causal: true, kvLengths: [50, 40, 33] },
    paging: { pageSize: 16, maxBlocks: 4, sharedBlocks: 2, unused: 'valid' },
  },
  {
    name: 'not causal, seqLen 33, headDim 128, pageSize 16, kvLengths [48, 17]', kind: 'full',
    options: { batch: 2, heads: 2, seqLen: 33, headDim: 128, kvLengths: [48, 17] },
    paging: { pageSize: 16, maxBlocks: 3 },
  },
  {
    name: 'seqLen 12 > kvLengths [5, 12], causal: early rows sit before position 0 and see nothing', kind: 'full',
    options: { batch: 2, heads: 2, seqLen: 12, headDim: 8, causal: true, kvLengths: [5, 12] },
    paging: { pageSize: 4, maxBlocks: 3 },
  },
  {
    name: 'softcap 20, ALiBi and sinks over large logits: causal chunk, qLengths [20, 7], kvLengths [100, 30], GQA 4/2, bshd, headDim 67',
    kind: 'full', magnitude: 12,
    options: {
      batch: 2, heads: 4, kvHeads: 2, seqLen: 20, headDim: 67, causal: true, layout: 'bshd', kvLengths: [100, 30], qLengths: [20, 7],
      softcap: 20, alibiSlopes: [0.25, 0.0625, 0.5, 0.125], sinkLogits: [1, -2, 0, 4],
    },
    paging: { pageSize: 16, maxBlocks: 7 }, emulated: true, halves: [FLOAT16],
  },
  {
    name: 'kvLengths [0, 11, 0] (rows of items 0 and 2 all −1), sinks: zeros and lse = sink', kind: 'full',
    options: { batch: 3, heads: 2, seqLen: 3, headDim: 8, causal: true, kvLengths: [0, 11, 0], sinkLogits: [0.5, -1] },
    paging: { pageSize: 4, maxBlocks: 3, unused: 'minus-one' }, emulated: true,
  },
  {
    name: 'local-global decode: causal window [31, 0] + globals [0, 1, 2, 3], GQA 8/2, kvLengths [128, 50], headDim 64', kind: 'localGlobal',
    options: { batch: 2, heads: 8, kvHeads: 2, seqLen: 1, headDim: 64, causal: true, window: [31, 0], globalTokens: [0, 1, 2, 3], kvLengths: [128, 50] },
    paging: { pageSize: 16, maxBlocks: 8 }, halves: [BFLOAT16, FLOAT16],
  },
  {
    name: 'local-global chunk: window [4, 2] + per-item globals, qLengths [7, 3], kvLengths [25, 9], pageSize 3, bshd, headDim 33', kind: 'localGlobal',
    options: {
      batch: 2, heads: 2, seqLen: 7, headDim: 33, window: [4, 2], globalTokens: [[1, 20], [0]], kvLengths: [25, 9], qLengths: [7, 3], layout: 'bshd',
    },
    paging: { pageSize: 3, maxBlocks: 10 }, emulated: true,
  },
  {
    name: 'local-global causal window [7, 0] + global 0 with ALiBi and sinks, pageSize 5, headDim 5', kind: 'localGlobal',
    options: {
      batch: 2, heads: 2, seqLen: 6, headDim: 5, causal: true, window: [7, 0], globalTokens: [0], kvLengths: [33, 6], qLengths: [6, 6],
      alibiSlopes: [0.25, 0.5], sinkLogits: [1, -2],
    },
    paging: { pageSize: 5, maxBlocks: 8 }, emulated: true,
  },
  {
    name: 'local-global kvLengths [0, 11, 0] without sinks: zeros and lse −Infinity', kind: 'localGlobal',
    options: { batch: 3, heads: 2, seqLen: 3, headDim: 8, window: [2, 2], kvLengths: [0, 11, 0] },
    paging: { pageSize: 4, maxBlocks: 3 },
  },
];

const problems = new Map<string, { problem: PagedProblem; reference: ReferenceResult }>();

function prepared(c: PagedCase): { problem: PagedProblem; reference: ReferenceResult } {
  let entry = problems.get(c.name);
  if (entry === undefined) {
    const dtypes = [...new Set([F32, ...(c.halves ?? [])].map((h) => h.dtype))];
    const problem = buildPaged(c.name, c.options, c.paging, c.magnitude, dtypes);
    entry = { problem, reference: referenceAttention(problem.q, problem.k, problem.v, problem.options) };
    if (c.magnitude !== undefined) expect(entry.reference.maxAbsScore).toBeGreaterThan(100);
    problems.set(c.name, entry);
  }
  return entry;
}

describe.each(BACKENDS)('backend %s: a paged cache computes what its gathered contiguous K/V computes', (backend) => {
  it.each(CASES.map((c): [string, PagedCase] => [`${c.kind}: ${c.name}`, c]))('%s', async (_title, c) => {
    const { problem: p, reference } = prepared(c);
    const before = snapshot(p.q, p.kPool, p.vPool, p.table);
    const differences: string[] = [];
    for (const dt of [F32, ...(c.halves ?? [])]) {
      const [q, kPool, vPool, k, v] = [p.q, p.kPool, p.vPool, p.k, p.v].map((x) => stored(dt.dtype, x));
      for (const mode of MODES) {
        const what = `${dt.dtype}${dt.outDtype !== dt.dtype ? ` → ${dt.outDtype}` : ''} ${mode}`;
        const paged = await call(c.kind, mode, q, kPool, vPool, p.pagedOptions, dt, backend);
        const contiguous = await call(c.kind, mode, q, k, v, p.options, dt, backend);
        checkResult(p.options, reference, p, paged, dt, `paged ${what}`);
        checkResult(p.options, reference, p, contiguous, dt, `contiguous ${what}`);
        const difference = bitDifference(paged, contiguous);
        if (difference !== null) differences.push(`${what}: ${difference}`);
      }
    }
    expect(snapshot(p.q, p.kPool, p.vPool, p.table), 'q, the pools or the table after the calls').toBe(before);
    expect(differences, 'paged and contiguous results on the same backend, bit for bit').toEqual([]);
  });

  it('entries past kvLengths are never read: −1, garbage or valid pages give the same bits', async () => {
    const options: PagedOptions = { batch: 3, heads: 2, seqLen: 2, headDim: 9, causal: true, kvLengths: [10, 0, 3] };
    const results: Result[] = [];
    let pool: string | undefined;
    for (const unused of ['minus-one', 'garbage', 'valid'] as const) {
      const p = buildPaged('unused entries', options, { pageSize: 4, maxBlocks: 4, unused });
      // The same pool and the same used entries each time (the unused ones draw nothing).
      pool ??= snapshot(p.kPool, p.vPool);
      expect(snapshot(p.kPool, p.vPool)).toBe(pool);
      for (let b = 0; b < 3; b++) {
        const used = Math.ceil(options.kvLengths[b] / 4);
        if (unused === 'minus-one') expect(Array.from(p.table.subarray(b * 4 + used, b * 4 + 4)).every((x) => x === -1)).toBe(true);
        if (unused === 'garbage') expect(Array.from(p.table.subarray(b * 4 + used, b * 4 + 4)).some((x) => x < 0 || x >= p.pageCount)).toBe(true);
      }
      for (const mode of MODES) {
        const r = await call('full', mode, p.q, p.kPool, p.vPool, p.pagedOptions, F32, backend);
        expectMatchesReference(p.options, referenceAttention(p.q, p.k, p.v, p.options), r.out as Float32Array, r.lse);
        results.push(r);
      }
    }
    for (const r of results.slice(1)) expect(bitDifference(r, results[0])).toBeNull();
  });

  it('kvLengths 0 for an item: exact zeros, lse −Infinity (or the sink)', async () => {
    const options: PagedOptions = { batch: 2, heads: 2, seqLen: 3, headDim: 4, kvLengths: [0, 6] };
    const p = buildPaged('kvLength 0', options, { pageSize: 4, maxBlocks: 2, unused: 'minus-one' });
    expect(Array.from(p.table.subarray(0, 2))).toEqual([-1, -1]);
    for (const sinkLogits of [undefined, [0.75, -3]]) {
      for (const kind of ['full', 'localGlobal'] as const) {
        for (const mode of MODES) {
          const extra = { ...(sinkLogits === undefined ? {} : { sinkLogits }), ...(kind === 'localGlobal' ? { window: [1, 1] } : {}) };
          const r = await call(kind, mode, p.q, p.kPool, p.vPool, { ...p.pagedOptions, ...extra }, F32, backend);
          // Item 0 is the first half of out (bhsd) and of lse.
          expect(Array.from(r.out.subarray(0, 2 * 3 * 4)).every((x) => Object.is(x, 0)), 'item 0 is +0 everywhere').toBe(true);
          expect(Array.from(r.lse.subarray(0, 6))).toEqual(sinkLogits === undefined ? Array(6).fill(-Infinity) : [0.75, 0.75, 0.75, -3, -3, -3]);
          expect(Array.from(r.lse.subarray(6)).every(Number.isFinite)).toBe(true);
          const o = { ...p.options, ...extra } as ReferenceOptions;
          expectMatchesReference(o, referenceAttention(p.q, p.k, p.v, o), r.out as Float32Array, r.lse);
        }
      }
    }
  });

  it('an empty pool (0 pages: k and v of length 0) when every kvLength is 0', async () => {
    const options = { batch: 2, heads: 2, seqLen: 2, headDim: 3, kvLengths: [0, 0], blockTable: new Int32Array([-1, -1, -1, -1]), pageSize: 8 };
    const q = randomNonZero(2 * 2 * 2 * 3, rng(1));
    for (const mode of MODES) {
      const r = await call('full', mode, q, new Float32Array(0), new Float32Array(0), options, F32, backend);
      expect(Array.from(r.out).every((x) => Object.is(x, 0))).toBe(true);
      expect(Array.from(r.lse).every((x) => x === -Infinity)).toBe(true);
    }
  });

  it('async fullAttention with threads 2: a paged decode batch, and concurrent calls on one pool', async () => {
    const options: PagedOptions = { batch: 4, heads: 8, kvHeads: 2, seqLen: 1, headDim: 64, causal: true, kvLengths: [300, 17, 256, 1] };
    const p = buildPaged('async threads 2', options, { pageSize: 16, maxBlocks: 19 });
    const reference = referenceAttention(p.q, p.k, p.v, p.options);
    const threaded = { ...p.pagedOptions, threads: 2 };
    const sync = await call('full', 'sync', p.q, p.kPool, p.vPool, threaded, F32, backend);
    expectMatchesReference(p.options, reference, sync.out as Float32Array, sync.lse);
    const results = await Promise.all([0, 1, 2].map(() => call('full', 'async', p.q, p.kPool, p.vPool, threaded, F32, backend)));
    for (const r of results) {
      expectMatchesReference(p.options, reference, r.out as Float32Array, r.lse);
      expect(bitDifference(r, sync), 'async and sync with threads 2').toBeNull();
    }
    // Without out: an array the package allocates. Chunked prefill on the same pool, too.
    const allocated = await attention('full', 'async', p.q, p.kPool, p.vPool, { ...threaded, backend });
    expect(allocated).toBeInstanceOf(Float32Array);
    expect(bitDifference({ out: allocated, lse: sync.lse }, sync)).toBeNull();
    const chunk: PagedOptions = { ...options, seqLen: 5, qLengths: [5, 5, 2, 1] };
    const c = buildPaged('async threads 2', chunk, { pageSize: 16, maxBlocks: 19 });
    const r = await call('full', 'async', c.q, c.kPool, c.vPool, { ...c.pagedOptions, threads: 2 }, F32, backend);
    expectMatchesReference(c.options, referenceAttention(c.q, c.k, c.v, c.options), r.out as Float32Array, r.lse);
  });
});

// --- Random shapes and page tables --------------------------------------------------------------------

interface Drawn {
  kind: Kind;
  options: PagedOptions;
  paging: Paging;
  seed: number;
  /** Entries of used blocks: any page of the pool, repeats allowed (shared pages). */
  pageDraws: number[];
  /** Entries past kvLengths: any int32. */
  garbageDraws: number[];
}

const MAX_BATCH = 3;
const MAX_HEADS = 6;
const MAX_BLOCKS = 6;

const float32In = (min: number, max: number): fc.Arbitrary<number> =>
  fc.float({ min: Math.fround(min), max: Math.fround(max), noNaN: true, noDefaultInfinity: true }).map((x) => (Object.is(x, -0) ? 0 : x));

const drawn: fc.Arbitrary<Drawn> = fc
  .record({
    kind: fc.constantFrom<Kind>('full', 'localGlobal'),
    batch: fc.integer({ min: 1, max: MAX_BATCH }),
    kvHeads: fc.integer({ min: 1, max: 2 }),
    group: fc.integer({ min: 1, max: 3 }),
    seqLen: fc.integer({ min: 1, max: 12 }),
    headDim: fc.integer({ min: 1, max: 24 }),
    pageSize: fc.oneof(fc.integer({ min: 1, max: 4 }), fc.integer({ min: 5, max: 17 })),
    maxBlocks: fc.integer({ min: 1, max: MAX_BLOCKS }),
    kvSeqLenDraw: fc.option(fc.nat(), { nil: undefined }),
    kvLengthDraws: fc.array(fc.nat(), { minLength: MAX_BATCH, maxLength: MAX_BATCH }),
    qLengthDraws: fc.option(fc.array(fc.nat(), { minLength: MAX_BATCH, maxLength: MAX_BATCH }), { nil: undefined }),
    extraPages: fc.integer({ min: 0, max: 3 }),
    layout: fc.constantFrom<'bhsd' | 'bshd'>('bhsd', 'bshd'),
    causal: fc.boolean(),
    window: fc.tuple(fc.integer({ min: -1, max: 20 }), fc.integer({ min: -1, max: 20 })),
    globalDraws: fc.array(fc.nat(), { maxLength: 4 }),
    softcap: fc.option(float32In(0.25, 50), { nil: undefined }),
    slopeDraws: fc.option(fc.array(float32In(-0.25, 1), { minLength: MAX_HEADS, maxLength: MAX_HEADS }), { nil: undefined }),
    sinkDraws: fc.option(fc.array(float32In(-10, 10), { minLength: MAX_HEADS, maxLength: MAX_HEADS }), { nil: undefined }),
    pageDraws: fc.array(fc.nat(), { minLength: MAX_BATCH * MAX_BLOCKS, maxLength: MAX_BATCH * MAX_BLOCKS }),
    garbageDraws: fc.array(fc.integer({ min: -2147483648, max: 2147483647 }), { minLength: MAX_BATCH * MAX_BLOCKS, maxLength: MAX_BATCH * MAX_BLOCKS }),
    seed: fc.integer(),
  })
  .map((d): Drawn => {
    const capacity = d.maxBlocks * d.pageSize;
    const kvSeqLen = d.kvSeqLenDraw === undefined ? undefined : 1 + (d.kvSeqLenDraw % capacity);
    const kvLengths = d.kvLengthDraws.slice(0, d.batch).map((x) => x % ((kvSeqLen ?? capacity) + 1));
    const heads = d.kvHeads * d.group;
    const options: PagedOptions = {
      batch: d.batch, heads, kvHeads: d.kvHeads, seqLen: d.seqLen, headDim: d.headDim, layout: d.layout, causal: d.causal, kvLengths,
    };
    if (d.qLengthDraws !== undefined) options.qLengths = d.qLengthDraws.slice(0, d.batch).map((x) => x % (d.seqLen + 1));
    if (d.softcap !== undefined) options.softcap = d.softcap;
    if (d.slopeDraws !== undefined) options.alibiSlopes = d.slopeDraws.slice(0, heads);
    if (d.sinkDraws !== undefined) options.sinkLogits = d.sinkDraws.slice(0, heads);
    if (d.kind === 'localGlobal') {
      options.window = [d.window[0], d.window[1]];
      options.globalTokens = d.globalDraws.map((x) => x % (kvSeqLen ?? capacity));
    }
    return {
      kind: d.kind, options, seed: d.seed, pageDraws: d.pageDraws, garbageDraws: d.garbageDraws,
      paging: { pageSize: d.pageSize, maxBlocks: d.maxBlocks, extraPages: d.extraPages, kvSeqLen },
    };
  });

/** buildPaged's pool and gather, with a drawn table: used entries any page (repeats allowed), the rest any int32. */
function drawnProblem(d: Drawn): PagedProblem {
  const p = buildPaged(`paged property ${d.seed}`, d.options, { ...d.paging, unused: 'minus-one' });
  const { pageSize, maxBlocks } = d.paging;
  const table = p.table;
  const used = Array.from(d.options.kvLengths, (l) => Math.ceil(l / pageSize));
  for (let b = 0; b < d.options.batch; b++) {
    for (let n = 0; n < maxBlocks; n++) {
      const index = b * maxBlocks + n;
      table[index] = n < used[b] ? d.pageDraws[index] % p.pageCount : d.garbageDraws[index];
    }
  }
  const random = rng(seedOf(`paged property fill ${d.seed}`));
  const n = inputLengths(p.options);
  return {
    ...p,
    k: gather(p.kPool, randomNonZero(n.kv, random), table, p.options, pageSize, maxBlocks),
    v: gather(p.vPool, randomNonZero(n.kv, random), table, p.options, pageSize, maxBlocks),
  };
}

/**
 * The reference check of the random draws: out within 1e-5 of the reference in L2, relative to the
 * reference on |v| (as bfloat16Mismatches measures), lse within 1e-5·max(1, |lse|), rows that see
 * nothing exact zeros. Not relative to the result itself: a draw of headDim 1 with a dominant sink
 * (sink 7.9 over scores ≤ 2.9) leaves out ~3e-4 summed from mixed-sign terms ~7e-3, where float32
 * scores and exps (~1e-6 relative each) are 1.00001e-5 of the result on avx2/avx512, contiguous and
 * paged alike: the contract's bound, not the page table, is what such a draw tests.
 */
function scaledMismatches(p: PagedProblem, out: Float32Array, lse: Float32Array): string[] {
  const reference = referenceAttention(p.q, p.k, p.v, p.options);
  const magnitude = referenceAttention(p.q, p.k, p.v.map(Math.abs), p.options).out;
  const found: string[] = [];
  const nan = out.findIndex(Number.isNaN);
  if (nan >= 0) found.push(`out[${nan}] is NaN`);
  let error = 0;
  let scale = 0;
  for (let i = 0; i < out.length; i++) {
    error += (out[i] - reference.out[i]) ** 2;
    scale += magnitude[i] ** 2;
  }
  if (!(Math.sqrt(error) <= 1e-5 * Math.sqrt(scale))) {
    found.push(`out is ${Math.sqrt(error)} from the reference (L2), more than 1e-5 of ${Math.sqrt(scale)} (the reference on |v|)`);
  }
  found.push(...emptyRowMismatches(p.options, reference, out));
  for (let r = 0; r < lse.length && found.length < 5; r++) {
    const want = reference.lse[r];
    const ok = want === -Infinity ? lse[r] === -Infinity : Math.abs(lse[r] - want) <= 1e-5 * Math.max(1, Math.abs(want));
    if (!ok) found.push(`lse[${r}] is ${lse[r]}, expected ${want}`);
  }
  return found;
}

const RUNS = 100;

describe.each(BACKENDS)('backend %s on random shapes and page tables: paged ≡ gathered contiguous', (backend) => {
  it.each(MODES)('%s', async (mode) => {
    await fc.assert(
      fc.asyncProperty(drawn, async (d) => {
        const p = drawnProblem(d);
        const paged = await call(d.kind, mode, p.q, p.kPool, p.vPool, p.pagedOptions, F32, backend);
        const contiguous = await call(d.kind, mode, p.q, p.k, p.v, p.options, F32, backend);
        expect(bitDifference(paged, contiguous), 'paged vs contiguous, bit for bit').toBeNull();
        const found = scaledMismatches(p, paged.out as Float32Array, paged.lse);
        if (found.length > 0) expect.fail(found.join('; '));
      }),
      { numRuns: RUNS },
    );
  });
});

// --- Bad input ---------------------------------------------------------------------------------------

// A valid paged call: 5 pages of 4 rows, item 0 uses 3 blocks (keys 0..8), item 1 one (keys 0..3).
const BAD_BASE = {
  batch: 2, heads: 2, kvHeads: 1, seqLen: 1, headDim: 4, causal: true, kvLengths: [9, 4],
  blockTable: new Int32Array([3, 0, 4, 1, -1, -1]), pageSize: 4,
};
const POOL = 5 * 4 * 1 * 4;

interface BadCase {
  rule: string;
  /** Changes to BAD_BASE (undefined deletes the key). */
  options?: Record<string, unknown>;
  k?: number;
  v?: number;
  error: typeof TypeError | typeof RangeError;
  message: RegExp;
}

function detachedTable(): Int32Array {
  const table = new Int32Array([3, 0, 4, 1, -1, -1]);
  structuredClone(table.buffer, { transfer: [table.buffer] });
  return table;
}

const BAD: BadCase[] = [
  {
    rule: 'blockTable a plain array', options: { blockTable: [3, 0, 4, 1, -1, -1] }, error: TypeError,
    message: /^options\.blockTable is \[3, 0, 4, 1, -1, -1\], expected an Int32Array of batch × maxBlocks page indices \(row-major\)$/,
  },
  { rule: 'blockTable a Uint32Array', options: { blockTable: new Uint32Array(6) }, error: TypeError, message: /^options\.blockTable is a Uint32Array of length 6, expected an Int32Array/ },
  { rule: 'blockTable a Float32Array', options: { blockTable: new Float32Array(6) }, error: TypeError, message: /^options\.blockTable is a Float32Array of length 6, expected an Int32Array/ },
  { rule: 'blockTable null', options: { blockTable: null }, error: TypeError, message: /^options\.blockTable is null, expected an Int32Array/ },
  { rule: 'blockTable detached', options: { blockTable: detachedTable() }, error: TypeError, message: /^options\.blockTable is an Int32Array whose buffer is detached, expected a usable Int32Array$/ },
  {
    rule: 'blockTable length not a multiple of batch', options: { blockTable: new Int32Array([3, 0, 4, 1, -1]) }, error: RangeError,
    message: /^options\.blockTable has length 5, expected a positive multiple of batch = 2 \(batch × maxBlocks\)$/,
  },
  { rule: 'blockTable empty', options: { blockTable: new Int32Array(0) }, error: RangeError, message: /^options\.blockTable has length 0, expected a positive multiple of batch = 2/ },
  {
    rule: 'pageSize missing', options: { pageSize: undefined }, error: TypeError,
    message: /^options\.pageSize is missing, expected the rows per page \(a positive integer\) with options\.blockTable$/,
  },
  { rule: 'pageSize 0', options: { pageSize: 0 }, error: RangeError, message: /^options\.pageSize is 0, expected a positive integer ≤ \d+$/ },
  { rule: 'pageSize −4', options: { pageSize: -4 }, error: RangeError, message: /^options\.pageSize is -4, expected a positive integer/ },
  { rule: 'pageSize 2.5', options: { pageSize: 2.5 }, error: RangeError, message: /^options\.pageSize is 2\.5, expected a positive integer/ },
  { rule: 'pageSize NaN', options: { pageSize: NaN }, error: RangeError, message: /^options\.pageSize is NaN, expected a positive integer/ },
  { rule: 'pageSize a string', options: { pageSize: '4' }, error: TypeError, message: /^options\.pageSize is "4", expected a positive integer$/ },
  {
    rule: 'pageSize without blockTable', options: { blockTable: undefined, kvSeqLen: 9 }, k: 2 * 9 * 4, v: 2 * 9 * 4, error: RangeError,
    message: /^options\.pageSize is given without options\.blockTable, expected both, for a paged KV cache, or neither$/,
  },
  {
    rule: 'kvLengths missing', options: { kvLengths: undefined }, error: TypeError,
    message: /^options\.kvLengths is missing, expected one cache length per batch item with options\.blockTable$/,
  },
  { rule: 'kvSeqLen > maxBlocks·pageSize', options: { kvSeqLen: 13 }, error: RangeError, message: /^options\.kvSeqLen is 13, expected a positive integer ≤ 12$/ },
  { rule: 'kvLengths past maxBlocks·pageSize', options: { kvLengths: [13, 4] }, error: RangeError, message: /^options\.kvLengths\[0\] is 13, expected an integer in \[0, kvSeqLen\] = \[0, 12\]$/ },
  { rule: 'kvLengths past a given kvSeqLen', options: { kvSeqLen: 8 }, error: RangeError, message: /^options\.kvLengths\[0\] is 9, expected an integer in \[0, kvSeqLen\] = \[0, 8\]$/ },
  {
    rule: 'k not whole pages', k: POOL - 1, error: RangeError,
    message: /^k has length 79, expected whole pages of pageSize·kvHeads·headDim = 4·1·4 = 16 elements \(a paged pool \[pageCount, pageSize, kvHeads, headDim\]\)$/,
  },
  { rule: 'v longer than k (whole pages)', v: POOL + 16, error: RangeError, message: /^v has length 96, expected k's length 80 \(the same page pool shape\)$/ },
  { rule: 'v not whole pages', v: POOL - 3, error: RangeError, message: /^v has length 77, expected k's length 80/ },
  {
    rule: 'an entry −1 below kvLengths', options: { blockTable: new Int32Array([3, -1, 4, 1, -1, -1]) }, error: RangeError,
    message: /^options\.blockTable\[1\] is -1 \(batch item 0, block 1, which holds keys below kvLengths\[0\] = 9\), expected a page index in \[0, pageCount\) = \[0, 5\) \(k holds 5 pages\)$/,
  },
  {
    rule: 'an entry = pageCount below kvLengths', options: { blockTable: new Int32Array([3, 0, 4, 5, -1, -1]) }, error: RangeError,
    message: /^options\.blockTable\[3\] is 5 \(batch item 1, block 0, which holds keys below kvLengths\[1\] = 4\), expected a page index in \[0, pageCount\) = \[0, 5\)/,
  },
  {
    rule: 'the last, partly used block out of range', options: { blockTable: new Int32Array([3, 0, 2147483647, 1, -1, -1]) }, error: RangeError,
    message: /^options\.blockTable\[2\] is 2147483647 \(batch item 0, block 2, which holds keys below kvLengths\[0\] = 9\)/,
  },
  {
    rule: 'an entry past what a bigger kvLength needs', options: { kvLengths: [9, 5] }, error: RangeError,
    message: /^options\.blockTable\[4\] is -1 \(batch item 1, block 1, which holds keys below kvLengths\[1\] = 5\)/,
  },
  { rule: 'an empty pool with a used page', k: 0, v: 0, error: RangeError, message: /^options\.blockTable\[0\] is 3 .*\[0, pageCount\) = \[0, 0\)/ },
  { rule: 'a global token past maxBlocks·pageSize', options: { globalTokens: [12] }, error: RangeError, message: /^options\.globalTokens/ },
];

describe.each(BACKENDS)('backend %s rejects bad paged calls, naming the argument, out and lse untouched', (backend) => {
  it.each(BAD.map((c): [string, BadCase] => [c.rule, c]))('%s', async (_rule, c) => {
    for (const kind of ['full', 'localGlobal'] as const) {
      if (kind === 'full' && c.options?.globalTokens !== undefined) continue;
      for (const mode of MODES) {
        const options: Record<string, unknown> = { ...BAD_BASE, ...(kind === 'localGlobal' ? { window: [2, 0] } : {}), ...c.options, backend };
        for (const key of Object.keys(options)) if (options[key] === undefined) delete options[key];
        const out = new Float32Array(2 * 2 * 1 * 4).fill(NaN);
        const lse = new Float32Array(2 * 2 * 1).fill(NaN);
        options.out = out;
        options.lse = lse;
        const q = randomNonZero(out.length, rng(2));
        const k = randomNonZero(c.k ?? POOL, rng(3));
        const v = randomNonZero(c.v ?? POOL, rng(4));
        let thrown: unknown;
        if (mode === 'sync') {
          try {
            await attention(kind, 'sync', q, k, v, options);
          } catch (error) {
            thrown = error;
          }
        } else {
          // An async function must reject, not throw.
          const fn = kind === 'full' ? gla.fullAttention : gla.localGlobalAttention;
          let promise: Promise<unknown> | undefined;
          expect(() => (promise = (fn as (...a: unknown[]) => Promise<unknown>)(q, k, v, options)), `${kind} async threw`).not.toThrow();
          thrown = await promise?.then(() => undefined, (error: unknown) => error);
        }
        expect(thrown, `${kind} ${mode} did not fail`).toBeInstanceOf(c.error);
        expect((thrown as Error).message, `${kind} ${mode}`).toMatch(c.message);
        expect(Array.from(out).every(Number.isNaN) && Array.from(lse).every(Number.isNaN), `${kind} ${mode}: out or lse written`).toBe(true);
      }
    }
  });
});

// --- cuda through the emulated plugin, in a process of its own ----------------------------------------
// As serving.test.ts does: where backends() has no 'cuda' (no GPU) but the addon and the emulated
// plugin (the real CUDA kernels compiled for the CPU) are built, a child process makes the calls with
// GLA_CUDA_PLUGIN pointing at it (the fixture serving.test.ts uses sends options as JSON, where a
// blockTable cannot be an Int32Array, so the child here is a script of its own). Each case: the
// paged and the contiguous call, sync and async by turns, float32.

const EMULATED_SKIP = emulatedCudaSkip(BACKENDS);
if (EMULATED_SKIP !== '') console.warn(`paged.test.ts: the paged cache on cuda through the emulated plugin${EMULATED_SKIP}`);

const CHILD = `
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const gla = require(path.join(process.argv[1], 'dist', 'index.js'));
const calls = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const decode = (base64) => { const b = Buffer.from(base64, 'base64'); const c = new Uint8Array(b.length); c.set(b); return new Float32Array(c.buffer); };
const encode = (view) => Buffer.from(view.buffer, view.byteOffset, view.byteLength).toString('base64');
(async () => {
  const report = gla.backendReport().find((b) => b.name === 'cuda');
  const results = [];
  if (report && report.available) {
    for (const c of calls) {
      const o = c.options;
      const lse = new Float32Array(o.batch * o.heads * o.seqLen).fill(NaN);
      const out = new Float32Array(o.batch * o.heads * o.seqLen * o.headDim).fill(NaN);
      const options = { ...o, out, lse, backend: 'cuda' };
      if (c.blockTable !== undefined) options.blockTable = Int32Array.from(c.blockTable);
      const fn = c.kind === 'full'
        ? (c.mode === 'sync' ? gla.fullAttentionSync : gla.fullAttention)
        : (c.mode === 'sync' ? gla.localGlobalAttentionSync : gla.localGlobalAttention);
      const result = { id: c.id };
      try {
        await fn(decode(c.q), decode(c.k), decode(c.v), options);
        result.out = encode(out);
        result.lse = encode(lse);
      } catch (error) {
        result.error = (error && error.constructor && error.constructor.name) + ': ' + (error && error.message);
      }
      results.push(result);
    }
  }
  console.log(JSON.stringify({ report, results }));
})().catch((error) => { console.error(error); process.exitCode = 1; });
`;

interface ChildCall {
  id: string;
  kind: Kind;
  mode: Mode;
  options: Record<string, unknown>;
  blockTable?: number[];
  q: string;
  k: string;
  v: string;
}

interface ChildResult {
  id: string;
  out?: string;
  lse?: string;
  error?: string;
}

const floatsOf = (base64: string): Float32Array => {
  const bytes = Buffer.from(base64, 'base64');
  const copy = new Uint8Array(bytes.length);
  copy.set(bytes);
  return new Float32Array(copy.buffer);
};
/** Typed-array options travel as plain arrays (JSON); the blockTable separately. */
const jsonOptions = (o: object): Record<string, unknown> => {
  const { blockTable: _table, ...rest } = o as Record<string, unknown>;
  return JSON.parse(JSON.stringify(rest, (_key, value: unknown) => (ArrayBuffer.isView(value) ? Array.from(value as unknown as ArrayLike<number>) : value)));
};

const CUDA_CASES = CASES.filter((c) => c.emulated === true);

describe(`the paged cache on cuda through the emulated plugin, in a process of its own${EMULATED_SKIP}`, () => {
  const dir = EMULATED_SKIP === '' ? fs.mkdtempSync(path.join(os.tmpdir(), 'gla-paged-cuda-')) : '';
  const results = new Map<string, ChildResult>();
  let failure: string | null = null;
  let available: { available: boolean; reason: string | null } | undefined;

  beforeAll(async () => {
    if (EMULATED_SKIP !== '') return;
    const calls: ChildCall[] = [];
    CUDA_CASES.forEach((c, index) => {
      const { problem: p } = prepared(c);
      const mode = MODES[index % 2];
      const inputs = { q: base64Of(p.q) };
      calls.push({
        id: `paged ${c.name}`, kind: c.kind, mode, options: jsonOptions(p.pagedOptions), blockTable: Array.from(p.table),
        ...inputs, k: base64Of(p.kPool), v: base64Of(p.vPool),
      });
      calls.push({ id: `contiguous ${c.name}`, kind: c.kind, mode, options: jsonOptions(p.options), ...inputs, k: base64Of(p.k), v: base64Of(p.v) });
    });
    const file = path.join(dir, 'calls.json');
    fs.writeFileSync(file, JSON.stringify(calls));
    const answer = await runOnEmulatedCuda<ChildResult>(['-e', CHILD, ROOT, file], 120_000);
    failure = answer.failure;
    if (failure !== null) return;
    available = answer.report;
    for (const [id, result] of answer.results) results.set(id, result);
  }, 150_000);
  afterAll(() => {
    if (dir !== '') fs.rmSync(dir, { recursive: true, force: true });
  });

  it.skipIf(EMULATED_SKIP !== '').each(CUDA_CASES.map((c): [string, PagedCase] => [`${c.kind}: ${c.name}`, c]))('%s', (_title, c) => {
    if (failure !== null) expect.fail(failure);
    expect(available?.available, `cuda is not available there: ${available?.reason}`).toBe(true);
    const { problem: p, reference } = prepared(c);
    const got: Result[] = [];
    for (const which of ['contiguous', 'paged']) {
      const result = results.get(`${which} ${c.name}`);
      if (result === undefined) expect.fail(`${which}: no answer from the child process`);
      if (result.error !== undefined) expect.fail(`${which}: ${result.error}`);
      const r = { out: floatsOf(result.out ?? ''), lse: floatsOf(result.lse ?? '') };
      checkResult(p.options, reference, p, r, F32, `${which} on cuda`);
      got.push(r);
    }
    expect(bitDifference(got[1], got[0]), 'paged vs contiguous on cuda, bit for bit').toBeNull();
  });
});
