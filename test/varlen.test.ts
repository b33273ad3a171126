// Packed variable-length batches (cuSeqlensQ / cuSeqlensK, FlashAttention's varlen): q and out are
// [totalQ, heads, headDim], k and v [totalK, kvHeads, headDim], lse [heads, totalQ]; sequence b owns
// query rows cuSeqlensQ[b] .. cuSeqlensQ[b+1]−1 and key rows cuSeqlensK[b] .. cuSeqlensK[b+1]−1, sees
// only its own keys, and its queries end where its keys end (query i at position i + kvLen − qLen).
// So a packed call is exactly each sequence computed alone, and that is what is checked here, on every
// backend, sync and async, float32 and the half types:
// - against the float64 reference of each sequence alone (a batch of one, bshd, whose q rows are the
//   sequence's packed rows), into NaN-prefilled out and lse: nothing exists outside the packed rows,
//   so every element of out and lse must be written;
// - against the same backend's separate call per sequence (float32, threads 1: bit for bit, but for
//   sequences of 1..4 queries on the native backends, which alone are planned as decode);
// - on random lengths and options (fast-check), with threads 2 async, and on bad input (each rule
//   names its argument; sync throws, async rejects; out and lse are untouched).
// cuda: in this process where backends() lists it (a GPU); else through the emulated plugin
// (build-tests/libgla_cuda_emulated.so) in a child process, as serving.test.ts does.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MODES, type Mode, attention } from './helpers/call';
import type { Kind } from './helpers/cases';
import { LSE_TOLERANCE, OUT_TOLERANCE, bfloat16Mismatches, emptyRowMismatches, relativeL2 } from './helpers/compare';
import type { HalfDType } from './helpers/half-bits';
import { BACKENDS, ROOT, gla } from './helpers/package';
import { randomNonZero, rng, seedOf } from './helpers/random';
import { type ReferenceOptions, type ReferenceResult, referenceAttention } from './reference';
import {
  type DType, EMULATED_CUDA_PLUGIN, HALF_DTYPES, type Precision, base64Of, bytesOf, emulatedCudaSkip, runOnEmulatedCuda, expectedResultName,
  precisionMismatches, tensorValues, truncatedHalfBits,
} from './reliability/support';

// --- Problems -------------------------------------------------------------------------------------

type Globals = readonly number[] | readonly (readonly number[])[];

interface PackedCase {
  name: string;
  kind: Kind;
  heads: number;
  kvHeads?: number;
  headDim: number;
  /** Query rows of each sequence (0 allowed). */
  qLens: readonly number[];
  /** Key rows of each sequence (0 allowed); as many as qLens. */
  kvLens: readonly number[];
  causal?: boolean;
  scale?: number;
  /** localGlobal only. */
  window?: number | readonly [number, number];
  /** localGlobal only: one list for all sequences, or one per sequence; positions within each. */
  globalTokens?: Globals;
  softcap?: number;
  alibiSlopes?: readonly number[];
  sinkLogits?: readonly number[];
  /** Scales q and k. */
  magnitude?: number;
  /** Also pass `batch` (= the number of sequences). */
  withBatch?: boolean;
}

type Tensor = Float32Array | Uint16Array;

interface Tensors<T extends Tensor = Float32Array> {
  q: T;
  k: T;
  v: T;
}

interface Geometry {
  batch: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  qStarts: Int32Array;
  kvStarts: Int32Array;
  totalQ: number;
  totalK: number;
  /** Elements per packed q (and out) row: heads·headDim. */
  qRow: number;
  /** Elements per packed k and v row: kvHeads·headDim. */
  kvRow: number;
}

function offsets(lengths: readonly number[]): Int32Array {
  const starts = new Int32Array(lengths.length + 1);
  for (let b = 0; b < lengths.length; b++) starts[b + 1] = starts[b] + lengths[b];
  return starts;
}

function geometryOf(c: PackedCase): Geometry {
  const kvHeads = c.kvHeads ?? c.heads;
  const qStarts = offsets(c.qLens);
  const kvStarts = offsets(c.kvLens);
  const batch = c.qLens.length;
  return {
    batch, heads: c.heads, kvHeads, headDim: c.headDim, qStarts, kvStarts, totalQ: qStarts[batch], totalK: kvStarts[batch],
    qRow: c.heads * c.headDim, kvRow: kvHeads * c.headDim,
  };
}

function makeValues(c: PackedCase, salt = ''): Tensors {
  const g = geometryOf(c);
  const random = rng(seedOf(`varlen ${salt}${c.name}`));
  return {
    q: randomNonZero(g.totalQ * g.qRow, random, c.magnitude ?? 1),
    k: randomNonZero(g.totalK * g.kvRow, random, c.magnitude ?? 1),
    v: randomNonZero(g.totalK * g.kvRow, random),
  };
}

/** The options of the packed call (fresh cuSeqlens arrays each time). */
function packedOptions(c: PackedCase): Record<string, unknown> {
  const o: Record<string, unknown> = {
    heads: c.heads, kvHeads: c.kvHeads ?? c.heads, headDim: c.headDim, cuSeqlensQ: offsets(c.qLens), cuSeqlensK: offsets(c.kvLens),
  };
  if (c.withBatch) o.batch = c.qLens.length;
  if (c.causal !== undefined) o.causal = c.causal;
  if (c.scale !== undefined) o.scale = c.scale;
  if (c.softcap !== undefined) o.softcap = c.softcap;
  if (c.alibiSlopes !== undefined) o.alibiSlopes = c.alibiSlopes;
  if (c.sinkLogits !== undefined) o.sinkLogits = c.sinkLogits;
  if (c.kind === 'localGlobal') {
    o.window = c.window ?? [-1, -1];
    if (c.globalTokens !== undefined) o.globalTokens = c.globalTokens;
  }
  return o;
}

/** Sequence b's global tokens: positions past its own keys cannot matter (no key there, no query there). */
function globalsOf(c: PackedCase, b: number): number[] | undefined {
  const g = c.globalTokens;
  if (g === undefined) return undefined;
  const list = g.length > 0 && typeof g[0] !== 'number' ? (g as readonly (readonly number[])[])[b] : (g as readonly number[]);
  const kept = list.filter((j) => j < c.kvLens[b]);
  return kept.length > 0 ? kept : undefined;
}

/**
 * Sequence b alone: a batch of one in bshd, whose q (and out) is exactly the sequence's packed rows.
 * A sequence with no keys is kvSeqLen 1 with kvLengths [0] (and one zero key row), so that the same
 * alignment p = i − qLen holds.
 */
function sequenceOptions(c: PackedCase, b: number): ReferenceOptions {
  const kvLen = c.kvLens[b];
  const o: ReferenceOptions = {
    batch: 1, heads: c.heads, kvHeads: c.kvHeads ?? c.heads, seqLen: c.qLens[b], kvSeqLen: Math.max(1, kvLen), headDim: c.headDim, layout: 'bshd',
  };
  if (kvLen === 0) o.kvLengths = [0];
  if (c.causal !== undefined) o.causal = c.causal;
  if (c.scale !== undefined) o.scale = c.scale;
  if (c.softcap !== undefined) o.softcap = c.softcap;
  if (c.alibiSlopes !== undefined) o.alibiSlopes = c.alibiSlopes;
  if (c.sinkLogits !== undefined) o.sinkLogits = c.sinkLogits;
  if (c.kind === 'localGlobal') {
    o.window = c.window ?? [-1, -1];
    const globals = globalsOf(c, b);
    if (globals !== undefined) o.globalTokens = globals;
  }
  return o;
}

/** Rows [start, end) of a packed tensor; one zero row where there are none (a sequence without keys). */
function rowsOf<T extends Tensor>(x: T, start: number, end: number, width: number): T {
  if (end === start) return new (x.constructor as new (length: number) => T)(width);
  return x.slice(start * width, end * width) as T;
}

function sequenceInputs<T extends Tensor>(g: Geometry, x: Tensors<T>, b: number): Tensors<T> {
  return {
    q: rowsOf(x.q, g.qStarts[b], g.qStarts[b + 1], g.qRow),
    k: rowsOf(x.k, g.kvStarts[b], g.kvStarts[b + 1], g.kvRow),
    v: rowsOf(x.v, g.kvStarts[b], g.kvStarts[b + 1], g.kvRow),
  };
}

interface Expectation {
  b: number;
  options: ReferenceOptions;
  /** The sequence's inputs, as values (the reference's inputs). */
  values: Tensors;
  reference: ReferenceResult;
}

/** The float64 reference of each sequence that has query rows. */
function expectationsOf(c: PackedCase, values: Tensors): Expectation[] {
  const g = geometryOf(c);
  const found: Expectation[] = [];
  for (let b = 0; b < g.batch; b++) {
    if (c.qLens[b] === 0) continue;
    const options = sequenceOptions(c, b);
    const x = sequenceInputs(g, values, b);
    found.push({ b, options, values: x, reference: referenceAttention(x.q, x.k, x.v, options) });
  }
  return found;
}

/** Sequence b's rows of a packed out, as the [1, qLen, heads, headDim] bshd tensor they are. */
function sequenceOut(g: Geometry, out: Float32Array, b: number): Float32Array {
  return out.subarray(g.qStarts[b] * g.qRow, g.qStarts[b + 1] * g.qRow);
}

/** Sequence b's entries of a packed lse [heads, totalQ], in the [1, heads, qLen] order of a batch of one. */
function sequenceLse(g: Geometry, lse: Float32Array, b: number): Float32Array {
  const qLen = g.qStarts[b + 1] - g.qStarts[b];
  const part = new Float32Array(g.heads * qLen);
  for (let h = 0; h < g.heads; h++) {
    for (let i = 0; i < qLen; i++) part[h * qLen + i] = lse[h * g.totalQ + g.qStarts[b] + i];
  }
  return part;
}

// --- Comparisons ----------------------------------------------------------------------------------

interface Precisions {
  outDtype: DType;
  precision: Precision;
}

const FLOAT32: Precisions = { outDtype: 'float32', precision: 'float32' };

/** Where one sequence's result departs from its reference, at the tolerance of what the call computed in. */
function sequenceMismatches(e: Expectation, out: Float32Array, lse: Float32Array, p: Precisions): string[] {
  const { options, reference } = e;
  let found: string[];
  if (p.precision === 'bfloat16') {
    found = bfloat16Mismatches(options, reference, e.values, out, lse, p.outDtype);
  } else if (p.outDtype !== 'float32') {
    found = [...precisionMismatches(options, reference, out, lse, p.outDtype, 'float32'), ...emptyRowMismatches(options, reference, out)];
  } else {
    found = [];
    const nan = out.findIndex(Number.isNaN);
    if (nan >= 0) found.push(`out[${nan}] is NaN`);
    const error = relativeL2(out, reference.out);
    if (!(error <= OUT_TOLERANCE)) found.push(`out is ${error} from the reference (relative L2), more than ${OUT_TOLERANCE}`);
    found.push(...emptyRowMismatches(options, reference, out));
    for (let r = 0; r < lse.length && found.length < 5; r++) {
      const want = reference.lse[r];
      const ok = want === -Infinity ? lse[r] === -Infinity : Math.abs(lse[r] - want) <= LSE_TOLERANCE * Math.max(1, Math.abs(want));
      if (!ok) found.push(`lse (head ${Math.floor(r / options.seqLen)}, row ${r % options.seqLen}) is ${lse[r]}, expected ${want}`);
    }
  }
  // A row that sees no key: lse is exactly −Infinity, or exactly the head's sink logit (a float32).
  for (let r = 0; r < lse.length && found.length < 8; r++) {
    if (reference.empty[r] === 0) continue;
    const h = Math.floor(r / options.seqLen);
    const want = options.sinkLogits === undefined ? -Infinity : Math.fround(options.sinkLogits[h]);
    if (!Object.is(lse[r], want)) found.push(`row ${r % options.seqLen} of head ${h} sees no key but its lse is ${lse[r]}, expected ${want}`);
  }
  return found;
}

/** Every element of the packed out and lse written (no NaN left), and each sequence against its reference. */
function packedMismatches(c: PackedCase, expected: Expectation[], out: Float32Array, lse: Float32Array, p: Precisions = FLOAT32): string[] {
  const g = geometryOf(c);
  const found: string[] = [];
  if (out.length !== g.totalQ * g.qRow) found.push(`out has length ${out.length}, expected totalQ·heads·headDim = ${g.totalQ * g.qRow}`);
  if (lse.length !== g.heads * g.totalQ) found.push(`lse has length ${lse.length}, expected heads·totalQ = ${g.heads * g.totalQ}`);
  if (found.length > 0) return found;
  const nan = out.findIndex(Number.isNaN);
  if (nan >= 0) found.push(`out[${nan}] (packed row ${Math.floor(nan / g.qRow)}) is NaN: left unwritten?`);
  const nanLse = lse.findIndex(Number.isNaN);
  if (nanLse >= 0) found.push(`lse[${nanLse}] (head ${Math.floor(nanLse / g.totalQ)}, packed row ${nanLse % g.totalQ}) is NaN: left unwritten?`);
  for (const e of expected) {
    const what = `sequence ${e.b} (qLen ${c.qLens[e.b]}, kvLen ${c.kvLens[e.b]})`;
    found.push(...sequenceMismatches(e, sequenceOut(g, out, e.b), sequenceLse(g, lse, e.b), p).map((m) => `${what}: ${m}`));
    if (found.length >= 8) break;
  }
  return found;
}

function expectPacked(c: PackedCase, expected: Expectation[], out: Float32Array, lse: Float32Array, what: string, p: Precisions = FLOAT32): void {
  const found = packedMismatches(c, expected, out, lse, p);
  if (found.length > 0) expect.fail(`${what}: ${found.join('; ')}`);
}

/** Bit-for-bit differences of a packed result from the per-sequence one, one message per sequence. */
function bitDifferences(g: Geometry, got: Float32Array, want: Float32Array, what: 'out' | 'lse'): Map<number, string> {
  const a = new Uint32Array(got.buffer, got.byteOffset, got.length);
  const w = new Uint32Array(want.buffer, want.byteOffset, want.length);
  const bySequence = new Map<number, { count: number; first: number }>();
  for (let i = 0; i < a.length; i++) {
    if (a[i] === w[i]) continue;
    const row = what === 'out' ? Math.floor(i / g.qRow) : i % g.totalQ;
    let b = 0;
    while (g.qStarts[b + 1] <= row) b++;
    const entry = bySequence.get(b);
    if (entry === undefined) bySequence.set(b, { count: 1, first: i });
    else entry.count++;
  }
  return new Map([...bySequence].map(([b, { count, first }]) =>
    [b, `${what}: sequence ${b} differs in ${count} elements, first ${what}[${first}] = ${got[first]} packed, ${want[first]} alone`]));
}

/** The same backend's separate calls, one per sequence (sync, float32), assembled as a packed result. */
async function separateCalls(c: PackedCase, x: Tensors, backend: string, extra: Record<string, unknown> = {}): Promise<{ out: Float32Array; lse: Float32Array }> {
  const g = geometryOf(c);
  const out = new Float32Array(g.totalQ * g.qRow).fill(NaN);
  const lse = new Float32Array(g.heads * g.totalQ).fill(NaN);
  for (let b = 0; b < g.batch; b++) {
    if (c.qLens[b] === 0) continue;
    const options = sequenceOptions(c, b);
    const s = sequenceInputs(g, x, b);
    const part = new Float32Array(c.heads * c.qLens[b]);
    const result = await attention(c.kind, 'sync', s.q, s.k, s.v, { ...options, lse: part, backend, ...extra });
    out.set(result, g.qStarts[b] * g.qRow);
    for (let h = 0; h < c.heads; h++) lse.set(part.subarray(h * c.qLens[b], (h + 1) * c.qLens[b]), h * g.totalQ + g.qStarts[b]);
  }
  return { out, lse };
}

/**
 * The sequences whose separate call the native planner may treat differently from the packed one,
 * so that bit-for-bit equality is not a property of the design there: the plan (native/core/plan.cc)
 * is made for the whole problem, and a problem of seqLen ≤ few_rows (≤ 4, per ISA) is planned as
 * decode, with key blocks twice as long (another summation order). A sequence of 1..4 queries alone
 * is such a problem; packed with a longer one it is not. (The other whole-problem choices, split-K
 * and GQA heads per unit, depend on the thread count: the comparison runs with threads 1.)
 */
function decodePlannedAlone(c: PackedCase, backend: string): Set<number> {
  const exempt = new Set<number>();
  if (backend === 'js') return exempt; // the JS kernel plans each (sequence, head, query tile) alone
  const maxQ = Math.max(...c.qLens);
  c.qLens.forEach((qLen, b) => {
    if (qLen > 0 && qLen <= 4 && qLen < maxQ) exempt.add(b);
  });
  return exempt;
}

/**
 * The packed result, computed with `threads`, against the same backend's separate call per sequence
 * (threads 1): bit for bit, except where decodePlannedAlone says the plans differ (those sequences
 * are compared with the reference, at its tolerance, by the caller).
 */
async function expectSameAsAlone(c: PackedCase, x: Tensors, backend: string, threads: number): Promise<void> {
  const g = geometryOf(c);
  const out = new Float32Array(g.totalQ * g.qRow).fill(NaN);
  const lse = new Float32Array(g.heads * g.totalQ).fill(NaN);
  await attention(c.kind, 'sync', x.q, x.k, x.v, { ...packedOptions(c), out, lse, threads, backend });
  const alone = await separateCalls(c, x, backend, { threads: 1 });
  const exempt = decodePlannedAlone(c, backend);
  const found: string[] = [];
  for (const [what, got, want] of [['out', out, alone.out], ['lse', lse, alone.lse]] as const) {
    for (const [b, message] of bitDifferences(g, got, want, what)) if (!exempt.has(b)) found.push(message);
  }
  if (found.length > 0) expect.fail(`packed (threads ${threads}) against the sequences called one by one (threads 1) on ${backend}: ${found.join('; ')}`);
}

function expectSameBits(a: Float32Array, b: Float32Array, what: string): void {
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const y = new Uint32Array(b.buffer, b.byteOffset, b.length);
  expect(a.length, `${what}: length`).toBe(b.length);
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) expect.fail(`${what}: element ${i} is ${a[i]}, expected ${b[i]}`);
}

// --- The cases ------------------------------------------------------------------------------------

const geometricSlopes = (heads: number): number[] => Array.from({ length: heads }, (_, h) => 2 ** (-8 * (h + 1) / heads));

const CASES: PackedCase[] = [
  {
    name: 'decode batch: one query each over caches of 130, 1, 0 and 57 keys, causal, GQA 4/2, headDim 33', kind: 'full',
    heads: 4, kvHeads: 2, headDim: 33, qLens: [1, 1, 1, 1], kvLens: [130, 1, 0, 57], causal: true,
  },
  {
    name: 'chunked prefill (17 of 50 keys, 1 of 64), an empty sequence, prefill 5 of 5 and 40 of 40, causal, GQA 6/2, headDim 5', kind: 'full',
    heads: 6, kvHeads: 2, headDim: 5, qLens: [17, 0, 5, 1, 40], kvLens: [50, 3, 5, 64, 40], causal: true,
  },
  {
    name: 'qLen > kvLen under causal: the early rows see nothing (zeros, lse −Infinity), headDim 67', kind: 'full',
    heads: 2, headDim: 67, qLens: [20, 7, 3, 1], kvLens: [5, 0, 3, 1], causal: true,
  },
  {
    name: 'qLen > kvLen under causal with sinks: the early rows get zeros and lse = the sink, headDim 67', kind: 'full',
    heads: 2, headDim: 67, qLens: [20, 7, 3, 1], kvLens: [5, 0, 3, 1], causal: true, sinkLogits: [0.75, -2],
  },
  {
    name: 'causal window [4, 0] with per-sequence global tokens (positions within each), GQA 4/1, headDim 33', kind: 'localGlobal',
    heads: 4, kvHeads: 1, headDim: 33, qLens: [33, 9, 0, 12, 1], kvLens: [40, 9, 4, 70, 1], causal: true, window: [4, 0],
    globalTokens: [[0, 1], [], [2], [3, 69], [0]],
  },
  {
    name: 'window [3, 3], not causal, shared globals [0, 5, 60] (past some sequences), softcap 10, ALiBi, sinks, headDim 67', kind: 'localGlobal',
    heads: 2, headDim: 67, qLens: [1, 25, 13, 6], kvLens: [30, 25, 0, 61], window: [3, 3], globalTokens: [0, 5, 60],
    softcap: 10, alibiSlopes: [0.25, 0.0625], sinkLogits: [1, -3], magnitude: 4,
  },
  {
    name: 'softcap, ALiBi and sinks, not causal, qLen < kvLen and qLen > kvLen, scale 0.3, batch given, headDim 5', kind: 'full',
    heads: 4, kvHeads: 2, headDim: 5, qLens: [8, 30, 1], kvLens: [31, 12, 1], scale: 0.3, softcap: 5,
    alibiSlopes: geometricSlopes(4), sinkLogits: [0.5, -1, 2, 0], magnitude: 4, withBatch: true,
  },
  {
    name: 'mostly empty: sequences without queries, without keys, or both, around one real one, MQA 3/1', kind: 'full',
    heads: 3, kvHeads: 1, headDim: 9, qLens: [0, 0, 3, 0, 2], kvLens: [0, 4, 3, 0, 0],
  },
  {
    name: 'eight short sequences, window W = 6 (a number), causal, shared global 0, headDim 16', kind: 'localGlobal',
    heads: 2, headDim: 16, qLens: [3, 1, 7, 2, 9, 1, 4, 5], kvLens: [3, 3, 7, 10, 9, 1, 4, 12], causal: true, window: 6, globalTokens: [0],
  },
  {
    name: 'longer: a 200-token causal prefill, a decode over 150 keys, 64 of 130, ALiBi, GQA 2/1, headDim 64', kind: 'full',
    heads: 2, kvHeads: 1, headDim: 64, qLens: [200, 1, 64], kvLens: [200, 150, 130], causal: true, alibiSlopes: [0.0625, 0.25],
  },
];

const prepared = new Map<string, { values: Tensors; expected: Expectation[] }>();
function preparedOf(c: PackedCase): { values: Tensors; expected: Expectation[] } {
  let entry = prepared.get(c.name);
  if (entry === undefined) {
    const values = makeValues(c);
    entry = { values, expected: expectationsOf(c, values) };
    prepared.set(c.name, entry);
  }
  return entry;
}

const describeCase = (c: PackedCase): string =>
  `${c.kind}: ${c.name} (qLens [${c.qLens.join(', ')}], kvLens [${c.kvLens.join(', ')}])`;

// --- The reference's view of packing, checked first -----------------------------------------------

describe('the per-sequence reference', () => {
  it('a sequence alone equals its item of a right-padded bshd batch with qLengths and kvLengths (same alignment)', () => {
    const c = CASES[4];
    const { values, expected } = preparedOf(c);
    const g = geometryOf(c);
    const seqLen = Math.max(...c.qLens);
    const kvSeqLen = Math.max(...c.kvLens);
    const padded: ReferenceOptions = {
      batch: g.batch, heads: c.heads, kvHeads: g.kvHeads, seqLen, kvSeqLen, headDim: c.headDim, layout: 'bshd', causal: c.causal,
      window: c.window, globalTokens: c.globalTokens, qLengths: c.qLens, kvLengths: c.kvLens,
    };
    const q = new Float32Array(g.batch * seqLen * g.qRow);
    const k = new Float32Array(g.batch * kvSeqLen * g.kvRow);
    const v = new Float32Array(g.batch * kvSeqLen * g.kvRow);
    for (let b = 0; b < g.batch; b++) {
      q.set(values.q.subarray(g.qStarts[b] * g.qRow, g.qStarts[b + 1] * g.qRow), b * seqLen * g.qRow);
      k.set(values.k.subarray(g.kvStarts[b] * g.kvRow, g.kvStarts[b + 1] * g.kvRow), b * kvSeqLen * g.kvRow);
      v.set(values.v.subarray(g.kvStarts[b] * g.kvRow, g.kvStarts[b + 1] * g.kvRow), b * kvSeqLen * g.kvRow);
    }
    const r = referenceAttention(q, k, v, padded);
    for (const e of expected) {
      const qLen = c.qLens[e.b];
      const rows = r.out.subarray(e.b * seqLen * g.qRow, (e.b * seqLen + qLen) * g.qRow);
      expect(relativeL2(rows, e.reference.out), `sequence ${e.b}: out`).toBeLessThan(1e-12);
      for (let h = 0; h < c.heads; h++) {
        for (let i = 0; i < qLen; i++) {
          const want = e.reference.lse[h * qLen + i];
          const got = r.lse[(e.b * c.heads + h) * seqLen + i];
          if (!(Object.is(got, want) || Math.abs(got - want) < 1e-12 * Math.max(1, Math.abs(want)))) {
            expect.fail(`sequence ${e.b}, head ${h}, row ${i}: lse ${got} padded, ${want} alone`);
          }
        }
      }
    }
  });

  it('the cases reach what they name: rows that see nothing, and sinks there', () => {
    const empties = (c: PackedCase): number => preparedOf(c).expected.reduce((n, e) => n + e.reference.empty.reduce((a, x) => a + x, 0), 0);
    expect(empties(CASES[2])).toBeGreaterThan(0);
    expect(empties(CASES[3])).toBe(empties(CASES[2]));
    expect(empties(CASES[7])).toBe(2 * 3); // sequence 4: 2 queries, no keys, 3 heads
    expect(preparedOf(CASES[5]).expected.some((e) => e.reference.maxAbsScore > 10)).toBe(true);
  });
});

// --- 1. Packed ≡ each sequence alone, on every backend ---------------------------------------------

describe.each(BACKENDS)('packed sequences on backend %s', (backend) => {
  it.each(CASES.map((c): [string, PackedCase] => [describeCase(c), c]))('%s', async (_title, c) => {
    const { values, expected } = preparedOf(c);
    const g = geometryOf(c);
    const copies = { q: values.q.slice(), k: values.k.slice(), v: values.v.slice() };

    // Sync into NaN-prefilled caller buffers: every element belongs to some sequence and must be written.
    const out = new Float32Array(g.totalQ * g.qRow).fill(NaN);
    const lse = new Float32Array(g.heads * g.totalQ).fill(NaN);
    const returned = await attention(c.kind, 'sync', values.q, values.k, values.v, { ...packedOptions(c), out, lse, backend });
    expect(returned).toBe(out);
    expectPacked(c, expected, out, lse, 'sync');

    // Async into NaN-prefilled caller buffers too: the same bits.
    const asyncOut = new Float32Array(g.totalQ * g.qRow).fill(NaN);
    const asyncLse = new Float32Array(g.heads * g.totalQ).fill(NaN);
    expect(await attention(c.kind, 'async', values.q, values.k, values.v, { ...packedOptions(c), out: asyncOut, lse: asyncLse, backend })).toBe(asyncOut);
    expectPacked(c, expected, asyncOut, asyncLse, 'async');
    expectSameBits(asyncOut, out, 'async out against sync out');
    expectSameBits(asyncLse, lse, 'async lse against sync lse');

    // The same backend, one call per sequence: bit for bit (threads 1: see decodePlannedAlone).
    await expectSameAsAlone(c, values, backend, 1);

    expectSameBits(values.q, copies.q, 'q after the calls');
    expectSameBits(values.k, copies.k, 'k after the calls');
    expectSameBits(values.v, copies.v, 'v after the calls');
  });

  it('without out, the package allocates totalQ·heads·headDim elements (float32, float16 and bfloat16 out; sync and async)', async () => {
    const found: string[] = [];
    for (const c of [CASES[1], CASES[3], CASES[5]]) {
      const { values, expected } = preparedOf(c);
      const g = geometryOf(c);
      const given = new Float32Array(g.totalQ * g.qRow);
      await attention(c.kind, 'sync', values.q, values.k, values.v, { ...packedOptions(c), out: given, backend });
      for (const outDtype of ['float32', 'float16', 'bfloat16'] as const) {
        for (const mode of MODES) {
          const what = `${c.name.slice(0, 30)}…, ${outDtype} out, ${mode}`;
          const lse = new Float32Array(g.heads * g.totalQ).fill(NaN);
          let result: Float32Array | Uint16Array;
          try {
            result = await attention(c.kind, mode, values.q, values.k, values.v, { ...packedOptions(c), outDtype, lse, backend }) as Float32Array | Uint16Array;
          } catch (error) {
            found.push(`${what}: ${String(error)}`);
            continue;
          }
          const name = Object.prototype.toString.call(result).slice(8, -1);
          if (name !== expectedResultName(outDtype)) found.push(`${what}: a ${name}, expected a ${expectedResultName(outDtype)}`);
          if (result.length !== g.totalQ * g.qRow) {
            found.push(`${what}: length ${result.length}, expected totalQ·heads·headDim = ${g.totalQ}·${g.heads}·${g.headDim} = ${g.totalQ * g.qRow}`);
            continue;
          }
          const mismatches = packedMismatches(c, expected, tensorValues(outDtype, result), lse, { outDtype, precision: 'float32' });
          if (mismatches.length > 0) found.push(`${what}: ${mismatches.join('; ')}`);
          if (outDtype === 'float32') {
            const bits = new Uint32Array(result.buffer, result.byteOffset, result.length);
            const want = new Uint32Array(given.buffer);
            if (bits.some((x, i) => x !== want[i])) found.push(`${what}: not the bits of the call with out`);
          }
        }
      }
    }
    if (found.length > 0) expect.fail(found.slice(0, 8).join('\n'));
  });

  it('reusing out and lse: stale values in every row are overwritten (rows that see nothing become exact zeros)', async () => {
    const c = CASES[3];
    const { values, expected } = preparedOf(c);
    const g = geometryOf(c);
    for (const mode of MODES) {
      const out = new Float32Array(g.totalQ * g.qRow).fill(7);
      const lse = new Float32Array(g.heads * g.totalQ).fill(7);
      await attention(c.kind, mode, values.q, values.k, values.v, { ...packedOptions(c), out, lse, backend });
      expectPacked(c, expected, out, lse, mode);
    }
  });

  it('without lse, and with threads 1: the same out', async () => {
    const c = CASES[1];
    const { values, expected } = preparedOf(c);
    const g = geometryOf(c);
    const lse = new Float32Array(g.heads * g.totalQ);
    const withLse = await attention(c.kind, 'sync', values.q, values.k, values.v, { ...packedOptions(c), lse, backend });
    expectPacked(c, expected, withLse, lse, 'with lse');
    for (const mode of MODES) {
      const plain = await attention(c.kind, mode, values.q, values.k, values.v, { ...packedOptions(c), backend });
      expectSameBits(plain, withLse, `${mode}, no lse`);
      const one = await attention(c.kind, mode, values.q, values.k, values.v, { ...packedOptions(c), threads: 1, backend });
      expectSameBits(one, withLse, `${mode}, threads 1`);
    }
  });

  it('every sequence empty of queries: out and lse are empty arrays; no keys at all: zeros and −Infinity (or the sinks)', async () => {
    const none: PackedCase = { name: 'no queries', kind: 'full', heads: 2, headDim: 4, qLens: [0, 0], kvLens: [3, 0] };
    const x = makeValues(none);
    expect(x.q.length).toBe(0);
    for (const mode of MODES) {
      const lse = new Float32Array(0);
      const result = await attention(none.kind, mode, x.q, x.k, x.v, { ...packedOptions(none), lse, backend });
      expect(result).toBeInstanceOf(Float32Array);
      expect(result.length).toBe(0);
    }
    for (const sinkLogits of [undefined, [0.5, -1.25]]) {
      const keyless: PackedCase = { name: 'no keys', kind: 'localGlobal', heads: 2, headDim: 4, qLens: [2, 3], kvLens: [0, 0], causal: true, window: [2, 0], sinkLogits };
      const y = makeValues(keyless);
      expect(y.k.length).toBe(0);
      const expected = expectationsOf(keyless, y);
      for (const mode of MODES) {
        const out = new Float32Array(y.q.length).fill(NaN);
        const lse = new Float32Array(2 * 5).fill(NaN);
        await attention(keyless.kind, mode, y.q, y.k, y.v, { ...packedOptions(keyless), out, lse, backend });
        expectPacked(keyless, expected, out, lse, `${mode}, sinks ${sinkLogits}`);
        expect(out.every((o) => o === 0), `${mode}: out is 0 everywhere`).toBe(true);
      }
    }
  });

  it('cuSeqlens views into larger arrays work, and an async call keeps its own copy (the caller may reuse them at once)', async () => {
    const c = CASES[4];
    const { values, expected } = preparedOf(c);
    const g = geometryOf(c);
    const storage = new Int32Array(3 + 2 * (g.batch + 1)).fill(-5);
    const cuSeqlensQ = storage.subarray(1, 1 + g.batch + 1);
    const cuSeqlensK = storage.subarray(2 + g.batch + 1, 2 + 2 * (g.batch + 1));
    cuSeqlensQ.set(g.qStarts);
    cuSeqlensK.set(g.kvStarts);
    const lse = new Float32Array(g.heads * g.totalQ).fill(NaN);
    const pending = attention(c.kind, 'async', values.q, values.k, values.v, { ...packedOptions(c), cuSeqlensQ, cuSeqlensK, lse, backend });
    // Other valid offsets with the same totals: a call that read them late would compute another problem.
    cuSeqlensQ.set(offsets([c.qLens.reduce((a, x) => a + x, 0), 0, 0, 0, 0]));
    cuSeqlensK.set(offsets([0, 0, 0, 0, c.kvLens.reduce((a, x) => a + x, 0)]));
    const out = await pending;
    expectPacked(c, expected, out, lse, 'async with the offsets overwritten after the call');
  });
});

// --- float16 and bfloat16 ---------------------------------------------------------------------------

interface HalfCall extends Precisions {
  dtype: HalfDType;
  mode: Mode;
}

const HALF_CALLS: HalfCall[] = HALF_DTYPES.flatMap((dtype, di): HalfCall[] => [
  { dtype, precision: 'float32', outDtype: 'float32', mode: MODES[di] },
  { dtype, precision: 'float32', outDtype: dtype, mode: MODES[1 - di] },
  { dtype, precision: 'bfloat16', outDtype: di === 0 ? dtype : 'float32', mode: MODES[di] },
]);

const HALF_CASES: PackedCase[] = [CASES[0], CASES[3], CASES[5], CASES[6]];

interface HalfProblem {
  bits: Tensors<Uint16Array>;
  expected: Expectation[];
}

const halfPrepared = new Map<string, HalfProblem>();
function halfProblem(c: PackedCase, dtype: HalfDType): HalfProblem {
  const key = `${dtype} ${c.name}`;
  let entry = halfPrepared.get(key);
  if (entry === undefined) {
    const x = makeValues(c, 'half ');
    const bits = { q: truncatedHalfBits(dtype, x.q), k: truncatedHalfBits(dtype, x.k), v: truncatedHalfBits(dtype, x.v) };
    const values = { q: tensorValues(dtype, bits.q), k: tensorValues(dtype, bits.k), v: tensorValues(dtype, bits.v) };
    entry = { bits, expected: expectationsOf(c, values) };
    halfPrepared.set(key, entry);
  }
  return entry;
}

describe.each(BACKENDS)('packed sequences with float16 and bfloat16 inputs on backend %s', (backend) => {
  it.each(HALF_CASES.map((c): [string, PackedCase] => [describeCase(c), c]))('%s', async (_title, c) => {
    const g = geometryOf(c);
    for (const call of HALF_CALLS) {
      const p = halfProblem(c, call.dtype);
      const lse = new Float32Array(g.heads * g.totalQ).fill(NaN);
      const out = call.outDtype === 'float32' ? new Float32Array(g.totalQ * g.qRow).fill(NaN) : new Uint16Array(g.totalQ * g.qRow).fill(0x7fff);
      const options = { ...packedOptions(c), dtype: call.dtype, outDtype: call.outDtype, precision: call.precision, out, lse, backend };
      const returned = await attention(c.kind, call.mode, p.bits.q, p.bits.k, p.bits.v, options);
      expect(returned).toBe(out);
      expectPacked(c, p.expected, tensorValues(call.outDtype, out), lse, `${call.dtype}, precision ${call.precision}, ${call.mode} → ${call.outDtype}`, call);

      // The package allocates a half out of the right kind too.
      if (call.outDtype !== 'float32' && call.mode === 'async') {
        const allocated = await attention(c.kind, 'async', p.bits.q, p.bits.k, p.bits.v, { ...options, out: undefined, lse: undefined });
        expect(Object.prototype.toString.call(allocated).slice(8, -1)).toBe(expectedResultName(call.outDtype));
        expect(Array.from(allocated as unknown as Uint16Array)).toEqual(Array.from(out));
      }
    }
  });
});

// --- 2. Random lengths and options (fast-check) ----------------------------------------------------

const MAX_BATCH = 4;

/** Finite float32 values in [min, max], -0 excluded. */
const float32In = (min: number, max: number): fc.Arbitrary<number> =>
  fc.float({ min: Math.fround(min), max: Math.fround(max), noNaN: true, noDefaultInfinity: true }).map((x) => (Object.is(x, -0) ? 0 : x));

const drawnCase: fc.Arbitrary<{ c: PackedCase; seed: number }> = fc
  .record({
    kind: fc.constantFrom<Kind>('full', 'localGlobal'),
    batch: fc.integer({ min: 1, max: MAX_BATCH }),
    kvHeads: fc.integer({ min: 1, max: 2 }),
    group: fc.integer({ min: 1, max: 3 }),
    headDim: fc.integer({ min: 1, max: 24 }),
    // 'prefill': qLen = kvLen; 'decode': qLen 1 (or 0); 'free': any pair, qLen > kvLen included.
    shape: fc.constantFrom('prefill', 'decode', 'free'),
    qDraws: fc.array(fc.integer({ min: 0, max: 24 }), { minLength: MAX_BATCH, maxLength: MAX_BATCH }),
    kvDraws: fc.array(fc.integer({ min: 0, max: 40 }), { minLength: MAX_BATCH, maxLength: MAX_BATCH }),
    causal: fc.boolean(),
    scale: fc.option(fc.double({ min: -2, max: 2, noNaN: true }), { nil: undefined }),
    window: fc.oneof(fc.integer({ min: 0, max: 30 }), fc.tuple(fc.integer({ min: -1, max: 25 }), fc.integer({ min: -1, max: 25 }))),
    globals: fc.constantFrom('none', 'shared', 'perSequence'),
    globalDraws: fc.array(fc.array(fc.nat(), { maxLength: 5 }), { minLength: MAX_BATCH, maxLength: MAX_BATCH }),
    softcap: fc.option(fc.oneof(fc.constant(0), float32In(0.25, 50)), { nil: undefined }),
    slopeDraws: fc.option(fc.array(float32In(-0.25, 1), { minLength: 6, maxLength: 6 }), { nil: undefined }),
    sinkDraws: fc.option(fc.array(float32In(-10, 10), { minLength: 6, maxLength: 6 }), { nil: undefined }),
    withBatch: fc.boolean(),
    seed: fc.integer(),
  })
  .map((d) => {
    const heads = d.kvHeads * d.group;
    const kvLens = d.kvDraws.slice(0, d.batch);
    const qLens = d.shape === 'prefill' ? kvLens.slice()
      : d.shape === 'decode' ? d.qDraws.slice(0, d.batch).map((x) => (x % 5 === 0 ? 0 : 1))
        : d.qDraws.slice(0, d.batch);
    const c: PackedCase = {
      name: `drawn ${d.seed}`, kind: d.kind, heads, kvHeads: d.kvHeads, headDim: d.headDim, qLens, kvLens, causal: d.causal,
      withBatch: d.withBatch,
    };
    if (d.scale !== undefined) c.scale = d.scale;
    if (d.softcap !== undefined) c.softcap = d.softcap;
    if (d.slopeDraws !== undefined) c.alibiSlopes = d.slopeDraws.slice(0, heads);
    if (d.sinkDraws !== undefined) c.sinkLogits = d.sinkDraws.slice(0, heads);
    if (d.kind === 'localGlobal') {
      c.window = typeof d.window === 'number' ? d.window : [d.window[0], d.window[1]];
      // Positions are checked against the longest sequence's keys (kvSeqLen of the packed problem).
      const maxKv = Math.max(1, ...kvLens);
      const lists = d.globalDraws.slice(0, d.batch).map((list) => list.map((x) => x % maxKv));
      if (d.globals === 'shared') c.globalTokens = lists[0];
      if (d.globals === 'perSequence') c.globalTokens = lists;
    }
    return { c, seed: d.seed };
  });

const RUNS = 150;

describe.each(BACKENDS)('backend %s on random packed batches', (backend) => {
  it.each(MODES)('%s: packed ≡ each sequence against its float64 reference', async (mode) => {
    await fc.assert(
      fc.asyncProperty(drawnCase, async ({ c }) => {
        const values = makeValues(c);
        const expected = expectationsOf(c, values);
        const g = geometryOf(c);
        const out = new Float32Array(g.totalQ * g.qRow).fill(NaN);
        const lse = new Float32Array(g.heads * g.totalQ).fill(NaN);
        await attention(c.kind, mode, values.q, values.k, values.v, { ...packedOptions(c), out, lse, backend });
        const found = packedMismatches(c, expected, out, lse);
        if (found.length > 0) throw new Error(`${describeCase(c)}: ${found.join('; ')}`);
      }),
      { numRuns: RUNS },
    );
  });
});

// The same draws stored as float16 or bfloat16 (or float32 with a half out), with a drawn precision,
// against the reference of the decoded inputs at that precision's tolerance.
const storedCase = fc.record({
  drawn: drawnCase,
  dtype: fc.constantFrom<DType>('float32', ...HALF_DTYPES),
  halfOut: fc.constantFrom<HalfDType>(...HALF_DTYPES),
  sameOut: fc.boolean(),
  precision: fc.constantFrom<Precision>('float32', 'bfloat16'),
});

describe.each(BACKENDS)('backend %s on random packed batches with half precision', (backend) => {
  it.each(MODES)('%s', async (mode) => {
    await fc.assert(
      fc.asyncProperty(storedCase, async ({ drawn: { c }, dtype, halfOut, sameOut, precision }) => {
        const values = makeValues(c);
        const store = (x: Float32Array): Tensor => (dtype === 'float32' ? x : truncatedHalfBits(dtype, x));
        const stored = { q: store(values.q), k: store(values.k), v: store(values.v) };
        const decoded = { q: tensorValues(dtype, stored.q), k: tensorValues(dtype, stored.k), v: tensorValues(dtype, stored.v) };
        const outDtype: DType = dtype !== 'float32' && sameOut ? dtype : dtype === 'float32' ? halfOut : 'float32';
        const g = geometryOf(c);
        const lse = new Float32Array(g.heads * g.totalQ).fill(NaN);
        const out = outDtype === 'float32' ? new Float32Array(g.totalQ * g.qRow).fill(NaN) : new Uint16Array(g.totalQ * g.qRow).fill(0x7fff);
        await attention(c.kind, mode, stored.q, stored.k, stored.v, { ...packedOptions(c), dtype, outDtype, precision, out, lse, backend });
        const found = packedMismatches(c, expectationsOf(c, decoded), tensorValues(outDtype, out), lse, { outDtype, precision });
        if (found.length > 0) throw new Error(`${dtype} → ${outDtype}, precision ${precision}, ${describeCase(c)}: ${found.join('; ')}`);
      }),
      { numRuns: RUNS / 3 },
    );
  });
});

// --- 3. Async fullAttention with threads 2 ---------------------------------------------------------

const THREADED: PackedCase = {
  name: 'threads 2: prefill 300, decode over 513 keys, 77 of 200, an empty one, 128 of 128, causal, GQA 4/2, headDim 64', kind: 'full',
  heads: 4, kvHeads: 2, headDim: 64, qLens: [300, 1, 77, 0, 128], kvLens: [300, 513, 200, 5, 128], causal: true,
};

describe.each(BACKENDS)('async fullAttention on packed sequences with threads 2 on backend %s', (backend) => {
  it(describeCase(THREADED), async () => {
    const c = THREADED;
    const { values, expected } = preparedOf(c);
    const g = geometryOf(c);
    const out = new Float32Array(g.totalQ * g.qRow).fill(NaN);
    const lse = new Float32Array(g.heads * g.totalQ).fill(NaN);
    const pending = gla.fullAttention(values.q, values.k, values.v, { ...packedOptions(c), out, lse, threads: 2, backend } as never);
    expect(pending).toBeInstanceOf(Promise);
    expect(await pending).toBe(out);
    expectPacked(c, expected, out, lse, 'async, threads 2');

    // The same result with one thread, sync (no split-K here either way: the problem has enough
    // (row group, head) pairs for two threads), and from the sequences called one by one.
    const single = new Float32Array(out.length).fill(NaN);
    const singleLse = new Float32Array(lse.length).fill(NaN);
    gla.fullAttentionSync(values.q, values.k, values.v, { ...packedOptions(c), out: single, lse: singleLse, threads: 1, backend } as never);
    expectSameBits(out, single, 'out, threads 2 async against threads 1 sync');
    expectSameBits(lse, singleLse, 'lse, threads 2 async against threads 1 sync');
    await expectSameAsAlone(c, values, backend, 1);
  });
});

// --- 4. Bad input ----------------------------------------------------------------------------------

// heads 2, headDim 4; sequences of (3 queries, 4 keys) and (2 queries, 5 keys): totalQ 5, totalK 9.
const BAD_SHAPE = { heads: 2, headDim: 4 };
const TOTAL_Q = 5;
const TOTAL_K = 9;
const Q_ELEMENTS = TOTAL_Q * 2 * 4;
const KV_ELEMENTS = TOTAL_K * 2 * 4;
const LSE_ELEMENTS = 2 * TOTAL_Q;
const SENTINEL = 12345;

interface BadArgs {
  q: unknown;
  k: unknown;
  v: unknown;
  options: Record<string, unknown>;
}

function validBad(kind: Kind): BadArgs {
  const options: Record<string, unknown> = {
    ...BAD_SHAPE, cuSeqlensQ: new Int32Array([0, 3, 5]), cuSeqlensK: new Int32Array([0, 4, 9]),
    out: new Float32Array(Q_ELEMENTS).fill(SENTINEL), lse: new Float32Array(LSE_ELEMENTS).fill(SENTINEL),
  };
  if (kind === 'localGlobal') options.window = [2, 0];
  return {
    q: new Float32Array(Q_ELEMENTS).fill(0.5), k: new Float32Array(KV_ELEMENTS).fill(0.25), v: new Float32Array(KV_ELEMENTS).fill(1), options,
  };
}

const withOptions = (extra: Record<string, unknown>) => (a: BadArgs): BadArgs => ({ ...a, options: { ...a.options, ...extra } });
const without = (key: string) => (a: BadArgs): BadArgs => {
  const options = { ...a.options };
  delete options[key];
  return { ...a, options };
};

function detachedInt32Array(values: number[]): Int32Array {
  const array = new Int32Array(values);
  structuredClone(array.buffer, { transfer: [array.buffer] });
  return array;
}

interface BadRule {
  rule: string;
  args: (valid: BadArgs) => BadArgs;
  error: typeof TypeError | typeof RangeError;
  message: RegExp;
  /** Only for this kind (default: both). */
  kind?: Kind;
}

const CU_EXPECTED = 'expected an Int32Array of batch \\+ 1 offsets, starting at 0 and non-decreasing';
const NOT_WITH_PACKED: Array<[string, unknown]> = [
  ['seqLen', 3], ['kvSeqLen', 5], ['layout', 'bshd'], ['layout', 'bhsd'], ['kvLengths', [4, 5]], ['qLengths', [3, 2]],
  ['blockTable', new Int32Array([0, 1])], ['pageSize', 16],
];

const BAD_RULES: BadRule[] = [
  { rule: 'cuSeqlensQ without cuSeqlensK', args: without('cuSeqlensK'), error: TypeError, message: new RegExp(`^options\\.cuSeqlensK is missing, ${CU_EXPECTED}`) },
  { rule: 'cuSeqlensK without cuSeqlensQ', args: without('cuSeqlensQ'), error: TypeError, message: new RegExp(`^options\\.cuSeqlensQ is missing, ${CU_EXPECTED}`) },
  { rule: 'cuSeqlensQ a plain array', args: withOptions({ cuSeqlensQ: [0, 3, 5] }), error: TypeError, message: new RegExp(`^options\\.cuSeqlensQ is \\[0, 3, 5\\], ${CU_EXPECTED}`) },
  { rule: 'cuSeqlensK a Uint32Array', args: withOptions({ cuSeqlensK: new Uint32Array([0, 4, 9]) }), error: TypeError, message: new RegExp(`^options\\.cuSeqlensK is a Uint32Array of length 3, ${CU_EXPECTED}`) },
  { rule: 'cuSeqlensQ a Float32Array', args: withOptions({ cuSeqlensQ: new Float32Array([0, 3, 5]) }), error: TypeError, message: /^options\.cuSeqlensQ is a Float32Array of length 3, expected an Int32Array/ },
  { rule: 'cuSeqlensK a BigInt64Array', args: withOptions({ cuSeqlensK: new BigInt64Array([0n, 4n, 9n]) }), error: TypeError, message: /^options\.cuSeqlensK is a BigInt64Array of length 3, expected an Int32Array/ },
  { rule: 'cuSeqlensQ null', args: withOptions({ cuSeqlensQ: null }), error: TypeError, message: /^options\.cuSeqlensQ is null, expected an Int32Array/ },
  { rule: 'cuSeqlensQ detached', args: withOptions({ cuSeqlensQ: detachedInt32Array([0, 3, 5]) }), error: TypeError, message: /^options\.cuSeqlensQ is an Int32Array whose buffer is detached/ },
  { rule: 'cuSeqlensQ of length 1', args: withOptions({ cuSeqlensQ: new Int32Array([0]), cuSeqlensK: new Int32Array([0]) }), error: RangeError, message: /^options\.cuSeqlensQ has length 1, expected at least 2/ },
  { rule: 'cuSeqlensK of length 0', args: withOptions({ cuSeqlensK: new Int32Array(0) }), error: RangeError, message: /^options\.cuSeqlensK has length 0, expected at least 2/ },
  { rule: 'cuSeqlensQ[0] ≠ 0', args: withOptions({ cuSeqlensQ: new Int32Array([1, 3, 5]) }), error: RangeError, message: /^options\.cuSeqlensQ\[0\] is 1, expected 0$/ },
  { rule: 'cuSeqlensK[0] negative', args: withOptions({ cuSeqlensK: new Int32Array([-1, 4, 9]) }), error: RangeError, message: /^options\.cuSeqlensK\[0\] is -1, expected 0$/ },
  {
    rule: 'cuSeqlensQ decreasing', args: withOptions({ cuSeqlensQ: new Int32Array([0, 5, 3]) }), error: RangeError,
    message: /^options\.cuSeqlensQ\[2\] is 3, expected ≥ options\.cuSeqlensQ\[1\] = 5/,
  },
  {
    rule: 'cuSeqlensK decreasing below 0', args: withOptions({ cuSeqlensK: new Int32Array([0, -2, 9]) }), error: RangeError,
    message: /^options\.cuSeqlensK\[1\] is -2, expected ≥ options\.cuSeqlensK\[0\] = 0/,
  },
  {
    rule: 'cuSeqlensQ and cuSeqlensK of different lengths', args: withOptions({ cuSeqlensK: new Int32Array([0, 9]) }), error: RangeError,
    message: /^options\.cuSeqlensK has length 2, expected cuSeqlensQ's length 3 \(batch \+ 1\)$/,
  },
  {
    rule: 'q shorter than totalQ·heads·headDim', args: (a) => ({ ...a, q: new Float32Array(Q_ELEMENTS - 8) }), error: RangeError,
    message: /^q has length 32, expected totalQ·heads·headDim = 5·2·4 = 40$/,
  },
  {
    rule: 'q as a padded batch (batch·heads·maxQ·headDim)', args: (a) => ({ ...a, q: new Float32Array(2 * 2 * 3 * 4) }), error: RangeError,
    message: /^q has length 48, expected totalQ·heads·headDim = 5·2·4 = 40$/,
  },
  {
    rule: 'k longer than totalK·kvHeads·headDim', args: (a) => ({ ...a, k: new Float32Array(KV_ELEMENTS + 1) }), error: RangeError,
    message: /^k has length 73, expected totalK·kvHeads·headDim = 9·2·4 = 72$/,
  },
  {
    rule: 'v of the wrong length', args: (a) => ({ ...a, v: new Float32Array(KV_ELEMENTS - 8) }), error: RangeError,
    message: /^v has length 64, expected totalK·kvHeads·headDim = 9·2·4 = 72$/,
  },
  {
    rule: 'k sized for kvHeads 1 with kvHeads 2', args: (a) => ({ ...a, k: new Float32Array(TOTAL_K * 4), v: new Float32Array(TOTAL_K * 4) }), error: RangeError,
    message: /^k has length 36, expected totalK·kvHeads·headDim = 9·2·4 = 72$/,
  },
  {
    rule: 'out of the wrong length', args: withOptions({ out: new Float32Array(Q_ELEMENTS + 4).fill(SENTINEL) }), error: RangeError,
    message: /^options\.out has length 44, expected totalQ·heads·headDim = 5·2·4 = 40$/,
  },
  {
    rule: 'lse as [batch, heads, maxQ] instead of [heads, totalQ]', args: withOptions({ lse: new Float32Array(2 * 2 * 3).fill(SENTINEL) }), error: RangeError,
    message: /^options\.lse has length 12, expected heads·totalQ = 2·5 = 10$/,
  },
  {
    rule: 'batch ≠ cuSeqlensQ.length − 1', args: withOptions({ batch: 3 }), error: RangeError,
    message: /^options\.batch is 3, expected cuSeqlensQ\.length − 1 = 2 \(or omit it\)$/,
  },
  { rule: 'batch 1 with two sequences', args: withOptions({ batch: 1 }), error: RangeError, message: /^options\.batch is 1, expected cuSeqlensQ\.length − 1 = 2/ },
  { rule: 'batch not an integer', args: withOptions({ batch: 2.5 }), error: RangeError, message: /^options\.batch is 2\.5, expected a positive safe integer$/ },
  { rule: 'batch a string', args: withOptions({ batch: '2' }), error: TypeError, message: /^options\.batch is "2", expected a positive integer$/ },
  ...NOT_WITH_PACKED.map(([name, value]): BadRule => ({
    rule: `${name} = ${ArrayBuffer.isView(value) ? 'an Int32Array' : JSON.stringify(value)} with cuSeqlensQ/cuSeqlensK`,
    args: withOptions({ [name]: value }), error: RangeError,
    message: new RegExp(`^options\\.${name} is given with cuSeqlensQ/cuSeqlensK, expected to leave it out`),
  })),
  {
    rule: 'blockTable and pageSize together with cuSeqlensQ/cuSeqlensK', args: withOptions({ blockTable: new Int32Array([0, 1]), pageSize: 4, kvLengths: [4, 5] }),
    error: RangeError, message: /^options\.(kvLengths|blockTable|pageSize) is given with cuSeqlensQ\/cuSeqlensK/,
  },
  {
    rule: 'globalTokens past the longest sequence’s keys', kind: 'localGlobal', args: withOptions({ globalTokens: [5] }), error: RangeError,
    message: /^options\.globalTokens\[0\] is 5, expected an integer key position in \[0, kvSeqLen\) = \[0, 5\)/,
  },
  {
    rule: 'one globalTokens list per sequence: as many lists as sequences', kind: 'localGlobal', args: withOptions({ globalTokens: [[0], [1], [2]] }),
    error: RangeError, message: /^options\.globalTokens has 3 lists, expected one list per batch item, batch = 2/,
  },
  {
    rule: 'alibiSlopes: one per query head', args: withOptions({ alibiSlopes: [0.5] }), error: RangeError,
    message: /^options\.alibiSlopes has length 1, expected heads = 2/,
  },
];

type Outcome = { threw: unknown } | { rejected: unknown } | { returned: unknown };

async function outcomeOf(kind: Kind, mode: Mode, a: BadArgs, backend: string): Promise<Outcome> {
  const args = [a.q, a.k, a.v, { ...a.options, backend }] as unknown as Parameters<typeof gla.localGlobalAttentionSync>;
  let pending: Promise<unknown>;
  try {
    if (mode === 'sync') return { returned: kind === 'full' ? gla.fullAttentionSync(...args) : gla.localGlobalAttentionSync(...args) };
    pending = kind === 'full' ? gla.fullAttention(...args) : gla.localGlobalAttention(...args);
  } catch (error) {
    return { threw: error };
  }
  try {
    return { returned: await pending };
  } catch (error) {
    return { rejected: error };
  }
}

describe.each(BACKENDS)('bad packed input on backend %s: a TypeError or RangeError naming the argument, and nothing written', (backend) => {
  const table = BAD_RULES.flatMap((r) => (['full', 'localGlobal'] as const)
    .filter((kind) => r.kind === undefined || r.kind === kind)
    .map((kind): [string, BadRule, Kind] => [`${kind}: ${r.rule}`, r, kind]));
  it.each(table)('%s', async (_title, r, kind) => {
    for (const mode of MODES) {
      const a = r.args(validBad(kind));
      const out = a.options.out as Float32Array;
      const lse = a.options.lse as Float32Array;
      const outcome = await outcomeOf(kind, mode, a, backend);
      const error = mode === 'sync' ? ('threw' in outcome ? outcome.threw : undefined) : ('rejected' in outcome ? outcome.rejected : undefined);
      if (error === undefined) {
        expect.fail(`${mode}: expected ${mode === 'sync' ? 'a throw' : 'a rejection (and no synchronous throw)'}, got ${JSON.stringify(Object.keys(outcome))}`);
      }
      expect(error, `${mode}: ${(error as Error).message}`).toBeInstanceOf(r.error);
      expect((error as Error).message, mode).toMatch(r.message);
      expect(out.every((x) => x === SENTINEL), `${mode}: out was written`).toBe(true);
      expect(lse.every((x) => x === SENTINEL), `${mode}: lse was written`).toBe(true);
    }
  });

  it('the valid call these rules break: accepted, with batch 2 given or not, and options given as undefined are not given', async () => {
    for (const kind of ['full', 'localGlobal'] as const) {
      for (const mode of MODES) {
        for (const extra of [{}, { batch: 2 }, { seqLen: undefined, layout: undefined, kvLengths: undefined, blockTable: undefined }]) {
          const a = withOptions(extra)(validBad(kind));
          const outcome = await outcomeOf(kind, mode, a, backend);
          if (!('returned' in outcome)) expect.fail(`${kind}, ${mode}, ${JSON.stringify(extra)}: ${String(Object.values(outcome)[0])}`);
          expect(outcome.returned).toBe(a.options.out);
          expect((a.options.out as Float32Array).every(Number.isFinite)).toBe(true);
        }
      }
    }
  });
});

// --- cuda through the emulated plugin, in a process of its own --------------------------------------
// Where backends() has no 'cuda' (no GPU) but the addon and the emulated plugin (the real CUDA kernels
// compiled for the CPU) are built: the calls run in a child with GLA_CUDA_PLUGIN pointing at it (the
// addon loads the plugin at first use). The script is written here (the shared fixture sizes lse as
// batch·heads·seqLen, which packed calls do not have). Tensors travel as base64 of their bytes.

const EMULATED_SKIP = emulatedCudaSkip(BACKENDS);
if (EMULATED_SKIP !== '') console.warn(`varlen.test.ts: packed sequences on cuda through the emulated plugin${EMULATED_SKIP}`);

/** What the plugin reports in a fresh process (a plugin built against another AttentionProblem is refused there). */
const EMULATED_REPORT: { available: boolean; reason: string | null } | null = (() => {
  if (EMULATED_SKIP !== '') return null;
  const env: NodeJS.ProcessEnv = { ...process.env, GLA_CUDA_PLUGIN: EMULATED_CUDA_PLUGIN as string };
  delete env.GLOBAL_LOCAL_ATTENTION_BACKEND;
  const script = `console.log(JSON.stringify(require(${JSON.stringify(path.join(ROOT, 'dist', 'index.js'))}).backendReport().find((b) => b.name === 'cuda') ?? null))`;
  const r = spawnSync(process.execPath, ['-e', script], { env, encoding: 'utf8', timeout: 60_000 });
  try {
    return JSON.parse(r.stdout.trim()) ?? { available: false, reason: 'backendReport() has no cuda entry' };
  } catch {
    return { available: false, reason: `the probe process failed (status ${r.status}): ${r.stderr.slice(-500)}` };
  }
})();

const CHILD_SCRIPT = `'use strict';
const fs = require('node:fs');
const path = require('node:path');
const [file, root] = process.argv.slice(2);
const gla = require(path.join(root, 'dist', 'index.js'));
const calls = JSON.parse(fs.readFileSync(file, 'utf8'));
const encode = (view) => Buffer.from(view.buffer, view.byteOffset, view.byteLength).toString('base64');
function decode(base64, dtype) {
  const bytes = Buffer.from(base64, 'base64');
  const copy = new Uint8Array(bytes.length);
  copy.set(bytes);
  return dtype === 'float32' ? new Float32Array(copy.buffer) : new Uint16Array(copy.buffer);
}
async function run() {
  const report = gla.backendReport().find((b) => b.name === 'cuda');
  const results = [];
  if (!report || !report.available) return { report, results };
  for (const c of calls) {
    const q = decode(c.q, c.dtype);
    const k = decode(c.k, c.dtype);
    const v = decode(c.v, c.dtype);
    const lse = new Float32Array(c.lseLength).fill(NaN);
    const out = c.outDtype === 'float32' ? new Float32Array(c.outLength).fill(NaN) : new Uint16Array(c.outLength).fill(0x7fff);
    const options = {
      ...c.options, cuSeqlensQ: Int32Array.from(c.options.cuSeqlensQ), cuSeqlensK: Int32Array.from(c.options.cuSeqlensK),
      out, lse, backend: 'cuda',
    };
    if (c.dtype !== 'float32') options.dtype = c.dtype;
    options.outDtype = c.outDtype;
    if (c.precision !== undefined) options.precision = c.precision;
    const fn = c.kind === 'full'
      ? (c.mode === 'sync' ? gla.fullAttentionSync : gla.fullAttention)
      : (c.mode === 'sync' ? gla.localGlobalAttentionSync : gla.localGlobalAttention);
    const result = { id: c.id };
    try {
      const returned = await fn(q, k, v, options);
      result.returnedOut = returned === out;
      result.out = encode(out);
      result.lse = encode(lse);
    } catch (error) {
      result.error = (error && error.constructor ? error.constructor.name : 'Error') + ': ' + (error && error.message);
    }
    result.inputsUntouched = encode(q) === c.q && encode(k) === c.k && encode(v) === c.v;
    results.push(result);
  }
  return { report, results };
}
run().then((r) => console.log(JSON.stringify(r)), (error) => { console.error(error); process.exitCode = 1; });
`;

interface ChildCall {
  id: string;
  kind: Kind;
  mode: Mode;
  dtype: DType;
  outDtype: DType;
  precision?: Precision;
  options: Record<string, unknown>;
  outLength: number;
  lseLength: number;
  q: string;
  k: string;
  v: string;
}

interface ChildResult {
  id: string;
  returnedOut?: boolean;
  out?: string;
  lse?: string;
  error?: string;
  inputsUntouched: boolean;
}


/** Typed-array options travel as plain arrays (JSON). */
function jsonOptions(o: Record<string, unknown>): Record<string, unknown> {
  return JSON.parse(JSON.stringify(o, (_key, value: unknown) => (ArrayBuffer.isView(value) ? Array.from(value as unknown as ArrayLike<number>) : value)));
}

const CUDA_READY = EMULATED_REPORT?.available === true;

describe(`packed sequences on cuda through the emulated plugin, in a process of its own${EMULATED_SKIP}`, () => {
  const dir = CUDA_READY ? fs.mkdtempSync(path.join(os.tmpdir(), 'gla-varlen-cuda-')) : '';
  const checks = new Map<string, (r: ChildResult) => void>();
  const results = new Map<string, ChildResult>();
  let failure: string | null = null;

  beforeAll(async () => {
    if (!CUDA_READY) return;
    const calls: ChildCall[] = [];
    [...CASES, THREADED].forEach((c, index) => {
      const { values, expected } = preparedOf(c);
      const g = geometryOf(c);
      const id = `f32 ${describeCase(c)}`;
      calls.push({
        id, kind: c.kind, mode: MODES[index % 2], dtype: 'float32', outDtype: 'float32', options: jsonOptions(packedOptions(c)),
        outLength: g.totalQ * g.qRow, lseLength: g.heads * g.totalQ, q: base64Of(values.q), k: base64Of(values.k), v: base64Of(values.v),
      });
      checks.set(id, (r) => expectPacked(c, expected, new Float32Array(bytesOf(r.out ?? '')), new Float32Array(bytesOf(r.lse ?? '')), id));
    });
    HALF_CASES.forEach((c, index) => {
      const call = HALF_CALLS[index % HALF_CALLS.length];
      const p = halfProblem(c, call.dtype);
      const g = geometryOf(c);
      const id = `${call.dtype} → ${call.outDtype} ${describeCase(c)}`;
      calls.push({
        id, kind: c.kind, mode: call.mode, dtype: call.dtype, outDtype: call.outDtype, precision: call.precision, options: jsonOptions(packedOptions(c)),
        outLength: g.totalQ * g.qRow, lseLength: g.heads * g.totalQ, q: base64Of(p.bits.q), k: base64Of(p.bits.k), v: base64Of(p.bits.v),
      });
      checks.set(id, (r) => {
        const bytes = bytesOf(r.out ?? '');
        const out = call.outDtype === 'float32' ? new Float32Array(bytes) : tensorValues(call.outDtype, new Uint16Array(bytes));
        // The plugin computes in float32 whatever the precision (bfloat16Products: false).
        expectPacked(c, p.expected, out, new Float32Array(bytesOf(r.lse ?? '')), id, { outDtype: call.outDtype, precision: 'float32' });
      });
    });
    const file = path.join(dir, 'calls.json');
    const script = path.join(dir, 'varlen-cuda-calls.cjs');
    fs.writeFileSync(file, JSON.stringify(calls));
    fs.writeFileSync(script, CHILD_SCRIPT);
    const answer = await runOnEmulatedCuda<ChildResult>([script, file, ROOT], 120_000);
    failure = answer.failure;
    if (failure !== null) return;
    if (answer.report?.available !== true) failure = `cuda is not available in the child: ${answer.report?.reason}`;
    for (const [id, result] of answer.results) results.set(id, result);
  }, 150_000);
  afterAll(() => {
    if (dir !== '') fs.rmSync(dir, { recursive: true, force: true });
  });

  it.skipIf(EMULATED_SKIP !== '')('the emulated plugin loads as cuda', () => {
    expect(EMULATED_REPORT?.available, `cuda through ${EMULATED_CUDA_PLUGIN} is not available: ${EMULATED_REPORT?.reason}`).toBe(true);
  });

  const ids = [
    ...[...CASES, THREADED].map((c) => `f32 ${describeCase(c)}`),
    ...HALF_CASES.map((c, index) => `${HALF_CALLS[index % HALF_CALLS.length].dtype} → ${HALF_CALLS[index % HALF_CALLS.length].outDtype} ${describeCase(c)}`),
  ];
  it.skipIf(!CUDA_READY).each(ids)('%s', (id) => {
    if (failure !== null) expect.fail(failure);
    const result = results.get(id);
    if (result === undefined) expect.fail(`${id}: no answer from the child process`);
    if (result.error !== undefined) expect.fail(`${id}: ${result.error}`);
    expect(result.inputsUntouched, `${id}: an input was written`).toBe(true);
    expect(result.returnedOut, `${id}: the call did not return out`).toBe(true);
    checks.get(id)?.(result);
  });
});
