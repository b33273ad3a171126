// The public boundary under fire: fast-check draws a small valid problem, then bends one thing
// about it (a length off by one, a dimension that is NaN or overflows 32 or 53 bits, a window below
// -1, a global token out of range, a detached or aliased buffer, a buffer transferred or shrunk
// while an async call runs…) or dresses it in an unusual but valid form (a subarray at an odd
// byteOffset, SharedArrayBuffer memory, growable or resizable buffers, duplicated global tokens,
// k and v the same array). Every call must then either compute the reference answer or throw a
// TypeError/RangeError whose message starts with the argument's name — never crash, hang, or write
// a byte of q, k, v (or of the memory around out and lse). Sync and async, every backend.
// Half precision is drawn too: q, k, v as float16/bfloat16 bit patterns (Uint16Array, a subclass, a
// Float16Array where the runtime has one) or float32, with options.dtype, outDtype and precision,
// checked against the float64 reference of the decoded inputs at the precision's tolerance; and
// the ways to get those options wrong (a Uint16Array without dtype, arrays of the wrong kind, q and
// k of different kinds, unknown or non-string names, an out of the wrong kind or length).
// The serving options too: qLengths, softcap, alibiSlopes and sinkLogits drawn valid (plain or
// typed arrays, extreme but finite values) against the reference, and drawn wrong (a wrong count,
// out of range, non-integer, non-finite, not a number, not a list) for a TypeError/RangeError naming
// the option or its entry (`options.qLengths[1]`). And the paged KV cache: the drawn k and v copied
// into shuffled pages of a pool (rows no sequence owns hold a far-off value, block-table entries past
// each length are -1) against the contiguous problem's reference, and drawn wrong (an entry outside
// the pool, a table or pageSize of the wrong kind, a pool that is not whole pages).
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { MODES, type Mode, attention } from '../helpers/call';
import type { Kind } from '../helpers/cases';
import { bfloat16Mismatches, emptyRowMismatches, expectMatchesReference } from '../helpers/compare';
import type { HalfDType } from '../helpers/half-bits';
import { BACKENDS, type Backend } from '../helpers/package';
import { type ReferenceOptions, referenceAttention } from '../reference';
import {
  type DType, type Guard, type Precision, Float16, HEAVY, changedOutside, expectedResultName, guard, makeProblem,
  precisionMismatches, tensorValues, truncatedHalfBits, typedArrayName, withTimeout,
} from './support';

type Target = 'q' | 'k' | 'v' | 'out' | 'lse';
const ARG_NAME: Record<Target, string> = { q: 'q', k: 'k', v: 'v', out: 'options.out', lse: 'options.lse' };

/** Where a Float32Array's memory lives: its own buffer, inside a larger one, shared memory, a
 *  growable SharedArrayBuffer, or (as a length-tracking view) a resizable ArrayBuffer. */
type Placement = 'plain' | 'offset' | 'shared' | 'sharedOffset' | 'growable' | 'resizable';

/** How a tensor of a half type is handed in: a Uint16Array of bits (placed as drawn), a subclass
 *  of Uint16Array, or a Float16Array over the bits where the runtime has one (else as 'typed'). */
type Form = 'typed' | 'subclass' | 'float16array';

/** The element types of a call and how its arrays hold them. */
interface Storage {
  dtype: DType;
  /** Whether options.dtype says it; always, for a half type whose q is not a Float16Array. */
  named: boolean;
  outDtype: DType | undefined;
  precision: Precision | undefined;
  forms: Record<'q' | 'k' | 'v' | 'out', Form>;
}

/** The calls the suite made before half precision: Float32Arrays, no dtype options. */
const FLOAT32: Storage = { dtype: 'float32', named: false, outDtype: undefined, precision: undefined, forms: { q: 'typed', k: 'typed', v: 'typed', out: 'typed' } };

interface Base {
  kind: Kind;
  options: ReferenceOptions & { kvHeads: number; kvSeqLen: number };
  withOut: boolean;
  withLse: boolean;
  placements: Record<Target, Placement>;
  pads: Record<Target, number>;
  seed: number;
  /** Used by the mutations that do not depend on q, k, v and out being Float32Arrays. */
  storage: Storage;
}

type Expectation =
  | { ok: true; reference: ReferenceOptions }
  | { ok: false; error: typeof TypeError | typeof RangeError; names: string[] };

interface Scenario {
  label: string;
  q: unknown;
  k: unknown;
  v: unknown;
  options: Record<string, unknown>;
  /** For async calls; sync ones get `during.syncExpect` (nothing can interrupt them). */
  expect: Expectation;
  /** The contiguous q, k, v whose reference the call must match, when the call reads another form (a page pool). */
  referenceInputs?: { q: Float32Array; k: Float32Array; v: Float32Array };
  /** Done by the caller right after an async call is submitted, to a buffer it thereby gives up. */
  during?: { act: () => void; givenUp: Target; syncExpect: Expectation; inputs: { q: Float32Array; k: Float32Array; v: Float32Array } };
}

const SENTINEL = -7.25;

// ES2024 constructor options that TypeScript's ES2022 lib does not declare.
type Resizable = ArrayBuffer & { resize(byteLength: number): void };
const resizableBuffer = (bytes: number, max: number): Resizable =>
  new (ArrayBuffer as unknown as new (n: number, o: { maxByteLength: number }) => Resizable)(bytes, { maxByteLength: max });
const growableShared = (bytes: number, max: number): SharedArrayBuffer =>
  new (SharedArrayBuffer as unknown as new (n: number, o: { maxByteLength: number }) => SharedArrayBuffer)(bytes, { maxByteLength: max });

type Tensor = Float32Array | Uint16Array;

/** A copy of `values` (a Float32Array or Uint16Array) `pad` elements into a buffer with `pad` sentinels on each side. */
function place<T extends Tensor>(values: T, placement: Placement, pad: number): T {
  const Type = (values instanceof Float32Array ? Float32Array : Uint16Array) as unknown as new (buffer: ArrayBufferLike, byteOffset?: number, length?: number) => T;
  const size = values.BYTES_PER_ELEMENT;
  if (placement === 'resizable') {
    // A length-tracking view (no length given) of a resizable buffer that could grow 4x.
    const view = new Type(resizableBuffer(values.length * size, values.length * size * 4));
    view.set(values);
    return view;
  }
  const offset = placement === 'offset' || placement === 'sharedOffset' || placement === 'growable' ? pad : 0;
  const total = values.length + 2 * offset;
  const buffer = placement === 'shared' || placement === 'sharedOffset'
    ? new SharedArrayBuffer(total * size)
    : placement === 'growable'
      ? growableShared(total * size, total * size * 4)
      : new ArrayBuffer(total * size);
  const whole = new Type(buffer);
  whole.fill(SENTINEL);
  const view = new Type(buffer, offset * size, values.length);
  view.set(values);
  return view;
}

/** A fresh array of `length` of the same type as `like` (a Float32Array, Uint16Array or Float16Array). */
function sameKind(like: unknown, length: number): ArrayBufferView {
  const name = typedArrayName(like);
  if (name === 'Float16Array' && Float16 !== undefined) return new Float16(length);
  return name === 'Uint16Array' ? new Uint16Array(length) : new Float32Array(length);
}

function detached(like: unknown, length: number): ArrayBufferView {
  const array = sameKind(like, length);
  structuredClone(array.buffer, { transfer: [array.buffer as ArrayBuffer] });
  return array;
}

class Bits extends Uint16Array {}
class Floats extends Float32Array {}

/** `values` stored as `dtype` in the drawn form and placement. */
function stored(values: Float32Array, dtype: DType, form: Form, placement: Placement, pad: number): ArrayBufferView {
  if (dtype === 'float32') return form === 'subclass' ? Floats.from(values) : place(values, placement, pad);
  const bits = truncatedHalfBits(dtype, values);
  if (form === 'subclass') return Bits.from(bits);
  const placed = place(bits, placement, pad);
  if (form !== 'float16array' || dtype !== 'float16' || Float16 === undefined) return placed;
  return placement === 'resizable' ? new Float16(placed.buffer) : new Float16(placed.buffer, placed.byteOffset, placed.length);
}

/** An out of `outDtype`, prefilled with NaN (0x7fff is a NaN in both half types). */
function blankOut(outDtype: DType, form: Form, length: number, placement: Placement, pad: number): ArrayBufferView {
  if (outDtype === 'float32') return place(new Float32Array(length).fill(NaN), placement, pad);
  const placed = place(new Uint16Array(length).fill(0x7fff), placement, pad);
  if (form === 'subclass') return Bits.from(placed);
  if (form !== 'float16array' || outDtype !== 'float16' || Float16 === undefined) return placed;
  return placement === 'resizable' ? new Float16(placed.buffer) : new Float16(placed.buffer, placed.byteOffset, placed.length);
}

/** The dtype, outDtype and precision options a storage gives a call. */
function storageOptions(s: Storage, qForm: Form): Record<string, unknown> {
  const options: Record<string, unknown> = {};
  const inferable = s.dtype === 'float32' || (s.dtype === 'float16' && qForm === 'float16array' && Float16 !== undefined);
  if (s.named || !inferable) options.dtype = s.dtype;
  if (s.outDtype !== undefined) options.outDtype = s.outDtype;
  if (s.precision !== undefined) options.precision = s.precision;
  return options;
}

/** A half type for a draw that needs one. */
const halfOf = (dtype: DType | undefined, fallback: HalfDType = 'float16'): HalfDType => (dtype === undefined || dtype === 'float32' ? fallback : dtype);

const placement = fc.constantFrom<Placement>('plain', 'offset', 'shared', 'sharedOffset', 'growable', 'resizable');
const targets = ['q', 'k', 'v', 'out', 'lse'] as const;
const dtypeDraw = fc.constantFrom<DType>('float32', 'float16', 'bfloat16');
const form = fc.constantFrom<Form>('typed', 'typed', 'subclass', 'float16array');
const storage: fc.Arbitrary<Storage> = fc.record({
  dtype: dtypeDraw,
  named: fc.boolean(),
  outDtype: fc.option(dtypeDraw, { nil: undefined, freq: 3 }),
  precision: fc.option(fc.constantFrom<Precision>('float32', 'bfloat16'), { nil: undefined, freq: 3 }),
  forms: fc.record({ q: form, k: form, v: form, out: form }),
});

const base: fc.Arbitrary<Base> = fc
  .record({
    kind: fc.constantFrom<Kind>('full', 'localGlobal'),
    batch: fc.integer({ min: 1, max: 2 }),
    kvHeads: fc.integer({ min: 1, max: 2 }),
    group: fc.integer({ min: 1, max: 2 }),
    seqLen: fc.integer({ min: 1, max: 12 }),
    kvSeqLen: fc.integer({ min: 1, max: 16 }),
    headDim: fc.integer({ min: 1, max: 20 }),
    layout: fc.constantFrom<'bhsd' | 'bshd'>('bhsd', 'bshd'),
    causal: fc.boolean(),
    window: fc.tuple(fc.integer({ min: -1, max: 6 }), fc.integer({ min: -1, max: 6 })),
    withOut: fc.boolean(),
    withLse: fc.boolean(),
    placements: fc.record({ q: placement, k: placement, v: placement, out: placement, lse: placement }),
    // Odd pads put views at byteOffsets that are no multiple of 16, 32 or 64: SIMD loads must cope.
    pads: fc.record({
      q: fc.integer({ min: 1, max: 17 }), k: fc.integer({ min: 1, max: 17 }), v: fc.integer({ min: 1, max: 17 }),
      out: fc.integer({ min: 1, max: 17 }), lse: fc.integer({ min: 1, max: 17 }),
    }),
    seed: fc.integer(),
    storage,
  })
  .map((d): Base => {
    const options: Base['options'] = {
      batch: d.batch, heads: d.kvHeads * d.group, kvHeads: d.kvHeads, seqLen: d.seqLen, kvSeqLen: d.kvSeqLen,
      headDim: d.headDim, layout: d.layout, causal: d.causal,
    };
    if (d.kind === 'localGlobal') options.window = d.window;
    return {
      kind: d.kind, options, withOut: d.withOut, withLse: d.withLse, placements: d.placements, pads: d.pads, seed: d.seed, storage: d.storage,
    };
  });

interface Built {
  /** Float32Arrays when built with FLOAT32 storage (every mutation that needs them is). */
  q: Float32Array;
  k: Float32Array;
  v: Float32Array;
  options: Record<string, unknown>;
  lengths: Record<Target, number>;
  storage: Storage;
  /** An array of the kind the call takes for each target (out: of outDtype), for mutations of length or state. */
  kinds: Record<Target, unknown>;
}

/** The valid call of a base problem, its buffers stored and placed as drawn. */
function build(b: Base, backend: Backend, s: Storage = FLOAT32): Built {
  const p = makeProblem(b.kind, b.options, b.seed);
  const o = b.options;
  const lengths = { q: p.q.length, k: p.k.length, v: p.v.length, out: p.q.length, lse: o.batch * o.heads * o.seqLen };
  const options: Record<string, unknown> = { ...o, backend, ...storageOptions(s, s.forms.q) };
  const outDtype = s.outDtype ?? s.dtype;
  const tensor = (name: 'q' | 'k' | 'v', values: Float32Array) => stored(values, s.dtype, s.forms[name], b.placements[name], b.pads[name]);
  const q = tensor('q', p.q);
  const k = tensor('k', p.k);
  const v = tensor('v', p.v);
  // NaN-filled so that an element the backend forgets to write cannot pass for a result.
  if (b.withOut) options.out = blankOut(outDtype, s.forms.out, lengths.out, b.placements.out, b.pads.out);
  if (b.withLse) options.lse = place(new Float32Array(lengths.lse).fill(NaN), b.placements.lse, b.pads.lse);
  const outKind = b.withOut ? options.out : blankOut(outDtype, s.forms.out, 0, 'plain', 0);
  return {
    q: q as Float32Array, k: k as Float32Array, v: v as Float32Array, options, lengths, storage: s,
    kinds: { q, k, v, out: outKind, lse: new Float32Array(0) },
  };
}

/**
 * The same draw at a size past every CPU backend's inline limit for async calls (2^18
 * multiply-adds, lib/inline-async.ts), so that an async call really leaves the JS thread: the
 * native addon then stages its buffers and settles from a dispatcher thread.
 */
function bulky(b: Base): Base {
  return { ...b, options: { ...b.options, seqLen: 96, kvSeqLen: 96, headDim: 32 } };
}

function backendOf(built: Built): Backend {
  return built.options.backend as Backend;
}

const valid = (label: string, built: Built, reference: ReferenceOptions, patch: Partial<Scenario> = {}): Scenario => ({
  label, q: built.q, k: built.k, v: built.v, options: built.options, expect: { ok: true, reference }, ...patch,
});

const invalid = (
  label: string, built: Built, error: typeof TypeError | typeof RangeError, names: string[], patch: Partial<Scenario> = {},
): Scenario => ({ label, q: built.q, k: built.k, v: built.v, options: built.options, expect: { ok: false, error, names }, ...patch });

function withArray(built: Built, target: Target, value: unknown): Partial<Scenario> {
  if (target === 'out' || target === 'lse') return { options: { ...built.options, [target]: value } };
  return { [target]: value };
}

const DIMS = ['batch', 'heads', 'seqLen', 'headDim', 'kvHeads', 'kvSeqLen', 'threads'] as const;
const BAD_NUMBERS = [NaN, Infinity, -Infinity, -1, 0, -0, 1.5, 2 ** 53, 2 ** 53 + 2, -(2 ** 31), Number.MIN_VALUE];
const BAD_TYPES: unknown[] = ['2', null, true, 2n, [2], {}];
const HUGE_SAFE = [2 ** 31 - 1, 2 ** 31, 2 ** 32, 2 ** 32 + 1, 2 ** 40, 2 ** 52 + 1, Number.MAX_SAFE_INTEGER];
const PRODUCTS = ['batch·heads·seqLen·headDim', 'batch·kvHeads·kvSeqLen·headDim', 'batch·heads·seqLen'];

/** A drawn paging of a built problem: k and v copied into shuffled pages of a pool, and its block table. */
interface PagedDraw { k: unknown; v: unknown; blockTable: Int32Array; pageSize: number; kvLengths: number[]; pageCount: number; usedEntries: number[] }

// What pool rows no sequence owns hold: a finite value far from the data (7776 in each dtype: float16
// bits 0x6F98, bfloat16 bits 0x45F3), so that a kernel reading one where it may not shows in the result.
const UNOWNED = { float32: 7776, float16: 0x6f98, bfloat16: 0x45f3 } as const;

function pagedDraw(b: Base, built: Built, pick: (n: number) => number): PagedDraw {
  const { batch, kvHeads, kvSeqLen, headDim } = b.options;
  const bshd = b.options.layout === 'bshd';
  const pageSize = [1, 2, 3, 5, 16][pick(5)];
  const maxBlocks = Math.ceil(kvSeqLen / pageSize) + pick(2);
  const kvLengths = b.options.kvLengths !== undefined
    ? Array.from(b.options.kvLengths as ArrayLike<number>)
    : Array.from({ length: batch }, () => [kvSeqLen, pick(kvSeqLen + 1)][pick(2)]);
  const needed = kvLengths.reduce((sum, n) => sum + Math.ceil(n / pageSize), 0);
  const pageCount = Math.max(1, needed + pick(3));
  // Pages handed out in a shuffled order, so that consecutive blocks are rarely adjacent.
  const order = Array.from({ length: pageCount }, (_, i) => i);
  for (let i = order.length - 1; i > 0; i--) {
    const j = pick(i + 1);
    [order[i], order[j]] = [order[j], order[i]];
  }
  const blockTable = new Int32Array(batch * maxBlocks).fill(-1);
  const usedEntries: number[] = [];
  let next = 0;
  for (let item = 0; item < batch; item++) {
    for (let n = 0; n < Math.ceil(kvLengths[item] / pageSize); n++) {
      blockTable[item * maxBlocks + n] = order[next++];
      usedEntries.push(item * maxBlocks + n);
    }
  }
  const row = kvHeads * headDim;
  const pool = (from: ArrayLike<number> & { constructor: unknown }) => {
    const Kind = from.constructor as new (n: number) => { [i: number]: number; fill(x: number): unknown };
    const half = built.storage.dtype !== 'float32' && typedArrayName(from) !== 'Float16Array';
    const to = new Kind(pageCount * pageSize * row);
    to.fill(half ? UNOWNED[built.storage.dtype] : UNOWNED.float32);
    for (let item = 0; item < batch; item++) {
      for (let j = 0; j < kvLengths[item]; j++) {
        const poolRow = blockTable[item * maxBlocks + Math.floor(j / pageSize)] * pageSize + (j % pageSize);
        for (let h = 0; h < kvHeads; h++) {
          const source = bshd ? ((item * kvSeqLen + j) * kvHeads + h) * headDim : ((item * kvHeads + h) * kvSeqLen + j) * headDim;
          for (let d = 0; d < headDim; d++) to[poolRow * row + h * headDim + d] = from[source + d];
        }
      }
    }
    return to;
  };
  return { k: pool(built.k), v: pool(built.v), blockTable, pageSize, kvLengths, pageCount, usedEntries };
}

/** Each entry: a label and how to turn a base problem into a scenario. */
type Mutation = (b: Base, built: Built, pick: (n: number) => number) => Scenario;

const MUTATIONS: Record<string, Mutation> = {
  // --- valid calls in unusual clothes ---
  'as drawn (subarrays at odd offsets, SharedArrayBuffers)': (b, built) => valid('as drawn', built, b.options),
  'as drawn, big enough to leave the JS thread': (b, built) => {
    const big = bulky(b);
    return valid('as drawn, bulky', build(big, backendOf(built), built.storage), big.options);
  },
  'as stored (float16/bfloat16 bits in a Uint16Array, subclass or Float16Array, or float32) with any outDtype and precision': (b, built) =>
    valid(`stored as ${JSON.stringify(built.storage)}`, built, b.options),
  'k and v are the same array (and q too when shapes allow)': (b, built) => {
    const same = b.options.heads === b.options.kvHeads && b.options.seqLen === b.options.kvSeqLen &&
      typedArrayName(built.q) === typedArrayName(built.k);
    return valid('k = v', built, b.options, { v: built.k, q: same ? built.k : built.q });
  },
  'a Float32Array subclass': (b, built) => {
    class Tensor extends Float32Array {}
    return valid('subclass', built, b.options, { q: Tensor.from(built.q) });
  },
  'huge but valid threads': (b, built) => valid('threads', built, b.options, { options: { ...built.options, threads: 2 ** 40 } }),
  'huge but valid windows': (b, built, pick) => {
    if (b.kind !== 'localGlobal') return valid('as drawn', built, b.options);
    const windows: Array<number | [number, number]> = [
      [Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER], [2 ** 31, 0], [0, 2 ** 32 + 1], [-1, 2 ** 40],
      [2 ** 31 - 1, 2 ** 31 - 1], 2 ** 40, Number.MAX_SAFE_INTEGER - 1,
    ];
    const window = windows[pick(windows.length)];
    return valid(`window ${JSON.stringify(window)}`, built, { ...b.options, window }, { options: { ...built.options, window } });
  },
  'duplicated, unsorted, typed-array global tokens': (b, built, pick) => {
    if (b.kind !== 'localGlobal') return valid('as drawn', built, b.options);
    const n = b.options.kvSeqLen;
    const lists: unknown[] = [
      [n - 1, 0, n - 1, 0, Math.floor(n / 2)], Int32Array.of(n - 1, n - 1), Float64Array.of(0, 0, n - 1), [],
      Array.from({ length: b.options.batch }, (_, i) => (i === 0 ? [] : [i % n, i % n, n - 1])),
    ];
    const globalTokens = lists[pick(lists.length)];
    return valid(`globalTokens ${String(globalTokens)}`, built, { ...b.options, globalTokens: globalTokens as number[] }, {
      options: { ...built.options, globalTokens },
    });
  },
  'kvLengths as a typed array, 0 and kvSeqLen': (b, built) => {
    const kvLengths = Float64Array.from({ length: b.options.batch }, (_, i) => (i % 2 === 0 ? b.options.kvSeqLen : 0));
    return valid('kvLengths', built, { ...b.options, kvLengths }, { options: { ...built.options, kvLengths } });
  },
  'serving options drawn valid: qLengths, softcap, ALiBi slopes, sink logits (plain or typed arrays, extremes included)': (b, built, pick) => {
    const { batch, heads, seqLen, kvSeqLen } = b.options;
    const serving: Record<string, unknown> = {};
    const typed = pick(2) === 0;
    if (pick(3) > 0) {
      const lengths = Array.from({ length: batch }, () => [0, seqLen, pick(seqLen + 1)][pick(3)]);
      serving.qLengths = typed ? Int32Array.from(lengths) : lengths;
    }
    if (pick(2) === 0) serving.kvLengths = Array.from({ length: batch }, () => pick(kvSeqLen + 1));
    if (pick(2) === 0) serving.softcap = [0, 0.5, 5, 30, Math.fround(1e30)][pick(5)];
    // float32 values, so that the reference sees exactly what the kernels see.
    const perHead = (values: number[]) => {
      const list = Array.from({ length: heads }, () => Math.fround(values[pick(values.length)]));
      return typed ? Float32Array.from(list) : list;
    };
    if (pick(2) === 0) serving.alibiSlopes = perHead([0, 0.0625, 0.5, 1, -0.125, 1 / 3]);
    if (pick(2) === 0) serving.sinkLogits = perHead([0, -1, 2.5, 40, -40, 1e30, -1e30, 3e38, -3e38]);
    const shown = Object.entries(serving).map(([key, value]) => `${key} ${typeof value === 'number' ? value : `[${Array.from(value as ArrayLike<number>).join(', ')}]`}`);
    return valid(`serving ${shown.join(', ')}`, built, { ...b.options, ...serving } as ReferenceOptions, { options: { ...built.options, ...serving } });
  },

  'a paged KV cache: k and v as shuffled pages of a pool, a block table, -1 past each length': (b, built, pick) => {
    const paged = pagedDraw(b, built, pick);
    const { dtype } = built.storage;
    return valid(`paged, pageSize ${paged.pageSize}, kvLengths [${paged.kvLengths.join(', ')}], table [${paged.blockTable.join(', ')}]`, built,
      { ...b.options, kvLengths: paged.kvLengths }, {
        k: paged.k, v: paged.v,
        options: { ...built.options, blockTable: paged.blockTable, pageSize: paged.pageSize, kvLengths: paged.kvLengths },
        referenceInputs: { q: tensorValues(dtype, built.q), k: tensorValues(dtype, built.k), v: tensorValues(dtype, built.v) },
      });
  },

  'a buffer transferred or shrunk while an async call runs': (drawnBase, drawnBuilt, pick) => {
    // Half the draws at a size that leaves the JS thread, half small enough to run inline.
    const b = pick(2) === 0 ? bulky(drawnBase) : drawnBase;
    const built = b === drawnBase ? drawnBuilt : build(b, backendOf(drawnBuilt));
    const target = targets[pick(5)];
    const shrink = pick(2) === 0;
    const inputs = { q: built.q.slice(), k: built.k.slice(), v: built.v.slice() };
    const current = target === 'q' || target === 'k' || target === 'v' ? built[target] : built.options[target];
    // A buffer the caller can give up: plain memory (shared memory can be neither transferred nor
    // shrunk), resizable when it is to shrink; out and lse are added when the draw had none.
    const given = shrink
      ? new Float32Array(resizableBuffer(built.lengths[target] * 4, built.lengths[target] * 4))
      : new Float32Array(built.lengths[target]);
    if (current instanceof Float32Array) given.set(current);
    else given.fill(NaN);
    const act = (): void => {
      if (shrink) (given.buffer as Resizable).resize(0);
      else structuredClone(given, { transfer: [given.buffer] });
    };
    const reference: Expectation = { ok: true, reference: b.options };
    const isInput = target === 'q' || target === 'k' || target === 'v';
    return {
      label: `${target} ${shrink ? 'shrunk' : 'transferred'} mid-call`,
      ...built,
      ...withArray(built, target, given),
      // Inputs were copied at submit: the right answer. An output that can no longer take the
      // result: a rejection naming it, with nothing written.
      expect: isInput ? reference : { ok: false, error: Error as typeof TypeError, names: [ARG_NAME[target]] },
      during: { act, givenUp: target, syncExpect: reference, inputs },
    } as Scenario;
  },

  // --- invalid buffers ---
  'a length off by one': (_b, built, pick) => {
    const target = targets[pick(5)];
    const length = Math.max(0, built.lengths[target] + (pick(2) === 0 ? -1 : 1));
    const value = sameKind(built.kinds[target], length);
    return invalid(`${target} length ${length} (${typedArrayName(value)})`, built, RangeError, [ARG_NAME[target]], withArray(built, target, value));
  },
  'a detached buffer': (_b, built, pick) => {
    const target = targets[pick(5)];
    const value = detached(built.kinds[target], built.lengths[target]);
    return invalid(`${target} detached (${typedArrayName(value)})`, built, TypeError, [ARG_NAME[target]], withArray(built, target, value));
  },
  'not an array of any dtype': (_b, built, pick) => {
    const target = targets[pick(5)];
    const n = built.lengths[target];
    const values: unknown[] = [new Float64Array(n), Array(n).fill(0.5), new Uint8Array(n * 4), new DataView(new ArrayBuffer(n * 4)),
      Buffer.alloc(n * 4), null, 3, 'q', { length: n }];
    if (target === 'q' || target === 'k' || target === 'v') values.push(undefined);
    const value = values[pick(values.length)];
    return invalid(`${target} = ${Object.prototype.toString.call(value)}`, built, TypeError, [ARG_NAME[target]], withArray(built, target, value));
  },
  'out aliasing q, k or v, or lse aliasing an input': (_b, built, pick) => {
    const { lengths } = built;
    const choice = pick(4);
    if (choice === 0) return invalid('out = q', built, RangeError, ['options.out'], { options: { ...built.options, out: built.q } });
    if (choice === 1) {
      // out starts inside k's memory: a partial overlap, not the same view.
      const shared = new Float32Array(lengths.k + lengths.out);
      const k = shared.subarray(0, lengths.k);
      k.set(built.k);
      const out = shared.subarray(lengths.k - 1, lengths.k - 1 + lengths.out);
      return invalid('out overlaps k', built, RangeError, ['options.out'], { k, options: { ...built.options, out } });
    }
    if (choice === 2) {
      const lse = new Float32Array(built.q.buffer, built.q.byteOffset, Math.min(lengths.lse, built.q.length));
      if (lse.length !== lengths.lse) return invalid('lse too long for q', built, RangeError, ['options.lse'], { options: { ...built.options, lse: new Float32Array(0) } });
      return invalid('lse inside q', built, RangeError, ['options.lse'], { options: { ...built.options, lse } });
    }
    const shared = new Float32Array(lengths.out + lengths.lse);
    return invalid('out overlaps lse', built, RangeError, ['options.out'], {
      options: { ...built.options, out: shared.subarray(0, lengths.out), lse: shared.subarray(lengths.out - 1, lengths.out - 1 + lengths.lse) },
    });
  },

  // --- invalid half-precision options and arrays (cheap, so a few kinds share a mutation) ---
  'dtype inference: a Uint16Array q without options.dtype; q and k (or v) of different kinds': (_b, built, pick) => {
    const { dtype } = built.storage;
    const half = halfOf(dtype);
    const { dtype: _dtype, ...undeclared } = built.options;
    const values = (name: 'q' | 'k' | 'v') => tensorValues(dtype, built[name]);
    const bits = (name: 'q' | 'k' | 'v') => (typedArrayName(built[name]) === 'Uint16Array' ? built[name] : truncatedHalfBits(half, values(name)));
    const choice = pick(3);
    if (choice === 0) {
      // Bits say nothing of their type: float16 and bfloat16 share the Uint16Array.
      return invalid(`${half} bits q, no dtype`, built, TypeError, ['options.dtype'], { q: bits('q'), options: undeclared });
    }
    const target = pick(2) === 0 ? 'k' : 'v';
    if (choice === 1) {
      // No dtype: a Float32Array q says float32, so bits in k or v are of the wrong kind.
      const patch: Partial<Scenario> = { q: values('q').slice(), k: target === 'v' ? values('k').slice() : bits('k'), options: undeclared };
      if (target === 'v') patch.v = bits('v');
      return invalid(`float32 q, ${half} bits ${target}`, built, TypeError, [target], patch);
    }
    // dtype is a half type, and k or v is a Float32Array of the same values.
    const patch: Partial<Scenario> = { options: { ...built.options, dtype: half }, q: bits('q'), k: target === 'k' ? values('k').slice() : bits('k') };
    if (target === 'v') patch.v = values('v').slice();
    return invalid(`${half} q, float32 ${target}`, built, TypeError, [target], patch);
  },
  'q, k, v or out of the wrong kind for dtype or outDtype, or a half out of the wrong length': (_b, built, pick) => {
    const { dtype } = built.storage;
    const outDtype = built.storage.outDtype ?? dtype;
    // dtype stated, so that q of another kind cannot change what it is inferred to be.
    const options = { ...built.options, dtype };
    const wrongFor = (d: DType, n: number): unknown[] => {
      const wrong: unknown[] = d === 'float32'
        ? [new Uint16Array(n), Bits.from(new Uint16Array(n)), new Int16Array(n), new Float64Array(n), new Uint32Array(n)]
        : [new Float32Array(n), Floats.from(new Float32Array(n)), new Int16Array(n), new Uint32Array(n), new Uint8Array(2 * n), new Float64Array(n)];
      if (Float16 !== undefined && d !== 'float16') wrong.push(new Float16(n));
      return wrong;
    };
    const choice = pick(4);
    if (choice === 0) {
      // Right length, wrong element type.
      const target = (['q', 'k', 'v'] as const)[pick(3)];
      const wrong = wrongFor(dtype, built.lengths[target]);
      const value = wrong[pick(wrong.length)];
      return invalid(`${target} = ${typedArrayName(value)} for dtype ${dtype}`, built, TypeError, [target], { options, [target]: value });
    }
    const n = built.lengths.out;
    if (choice === 1) {
      const wrong = wrongFor(outDtype, n);
      const value = wrong[pick(wrong.length)];
      return invalid(`outDtype ${outDtype}, out = ${typedArrayName(value)}`, built, TypeError, ['options.out'], { options: { ...options, out: value } });
    }
    if (choice === 2) {
      // outDtype differs from dtype, and out is of the inputs' kind.
      const other: DType = dtype === 'float32' ? halfOf(outDtype, 'bfloat16') : 'float32';
      const value = sameKind(built.q, n);
      return invalid(`outDtype ${other}, out = ${typedArrayName(value)}`, built, TypeError, ['options.out'], { options: { ...options, outDtype: other, out: value } });
    }
    const half = halfOf(outDtype, halfOf(dtype));
    const length = [n - 1, n + 1, 2 * n, Math.floor(n / 2), 0][pick(5)];
    const value = pick(2) === 0 && half === 'float16' && Float16 !== undefined ? new Float16(length) : new Uint16Array(length).fill(0x7fff);
    return invalid(`${half} out of length ${length} for ${n}`, built, RangeError, ['options.out'], { options: { ...options, outDtype: half, out: value } });
  },
  'a dtype, outDtype or precision that is unknown (RangeError) or not a string (TypeError)': (_b, built, pick) => {
    const key = (['dtype', 'outDtype', 'precision'] as const)[pick(3)];
    if (pick(2) === 0) {
      const names = ['float64', 'half', 'fp16', 'bf16', 'Float16', 'FLOAT32', 'float32 ', '', 'tf32', 'int8', 'bfloat'];
      if (key === 'precision') names.push('float16');
      const value = names[pick(names.length)];
      return invalid(`${key} = ${JSON.stringify(value)}`, built, RangeError, [`options.${key}`], { options: { ...built.options, [key]: value } });
    }
    const values: unknown[] = [16, 0, NaN, null, true, {}, ['float16'], new String('float16'), 16n, Symbol('float16'), () => 'float16', Float32Array];
    const value = values[pick(values.length)];
    return invalid(`${key} = ${typeof value}`, built, TypeError, [`options.${key}`], { options: { ...built.options, [key]: value } });
  },

  // --- invalid shapes ---
  'a dimension that is NaN, infinite, negative, fractional or unsafe': (_b, built, pick) => {
    const key = DIMS[pick(DIMS.length)];
    const value = BAD_NUMBERS[pick(BAD_NUMBERS.length)];
    return invalid(`${key} = ${value}`, built, RangeError, [`options.${key}`], { options: { ...built.options, [key]: value } });
  },
  'a dimension of the wrong type': (_b, built, pick) => {
    const key = DIMS[pick(DIMS.length)];
    const value = BAD_TYPES[pick(BAD_TYPES.length)];
    return invalid(`${key} = ${String(value)}`, built, TypeError, [`options.${key}`], { options: { ...built.options, [key]: value } });
  },
  'a huge safe-integer dimension': (_b, built, pick) => {
    const key = DIMS[pick(DIMS.length - 1)]; // threads is valid at any size
    const value = HUGE_SAFE[pick(HUGE_SAFE.length)];
    // Depending on the value: past the Int32 sequence limit, heads not divisible by kvHeads, an
    // element count past what a Float32Array can hold, or a buffer of the wrong length.
    return invalid(`${key} = ${value}`, built, RangeError, [`options.${key}`, 'options.kvHeads', ...PRODUCTS, 'q', 'k', 'v'], {
      options: { ...built.options, [key]: value },
    });
  },
  'an element count that wraps at 2^32 back to the true length': (b, built) => {
    // batch ≡ the real batch (mod 2^32): a validator multiplying in 32 bits would accept the buffers.
    const batch = 2 ** 32 + b.options.batch;
    return invalid(`batch = ${batch}`, built, RangeError, [PRODUCTS[0]], { options: { ...built.options, batch } });
  },
  'an element count past 2^53': (_b, built, pick) => {
    const big = 2 ** 27 + 1;
    const patch = pick(2) === 0 ? { batch: big, heads: big, kvHeads: 1 } : { batch: big, headDim: big, kvSeqLen: 2 ** 31 - 1 };
    return invalid(JSON.stringify(patch), built, RangeError, [PRODUCTS[0], PRODUCTS[1]], { options: { ...built.options, ...patch } });
  },
  'kvHeads that does not divide heads': (b, built) => {
    const heads = b.options.kvHeads * 2 + 1;
    return invalid(`heads ${heads}, kvHeads ${b.options.kvHeads * 2}`, built, RangeError, ['options.kvHeads'], {
      options: { ...built.options, heads, kvHeads: b.options.kvHeads * 2 },
    });
  },

  // --- invalid mask and behaviour options ---
  'a window below -1, fractional, non-finite or malformed': (b, built, pick) => {
    if (b.kind === 'full') return invalid('window on fullAttention', built, RangeError, ['options.window'], { options: { ...built.options, window: [1, 1] } });
    const windows: unknown[] = [[-2, 0], [0, -2], [-(2 ** 31), 0], [1.5, 0], [NaN, 0], [Infinity, 0], [0, -Infinity],
      [2 ** 53, 0], [1], [1, 2, 3], [], -1, 2.5, NaN, Infinity, 2 ** 53];
    const window = windows[pick(windows.length)];
    return invalid(`window ${String(window)}`, built, RangeError, ['options.window'], { options: { ...built.options, window } });
  },
  'a window of the wrong type': (b, built, pick) => {
    if (b.kind === 'full') return invalid('globalTokens on fullAttention', built, RangeError, ['options.globalTokens'], { options: { ...built.options, globalTokens: [0] } });
    const windows: unknown[] = ['3', null, undefined, { 0: 1, 1: 1, length: 2 }, [1, '1'], [1n, 0], [null, 0]];
    const window = windows[pick(windows.length)];
    return invalid(`window ${String(window)}`, built, TypeError, ['options.window'], { options: { ...built.options, window } });
  },
  'a global token out of range or not an integer': (b, built, pick) => {
    if (b.kind === 'full') return invalid('globalTokens on fullAttention', built, RangeError, ['options.globalTokens'], { options: { ...built.options, globalTokens: [0] } });
    const n = b.options.kvSeqLen;
    const bad = [n, n + 1, -1, 0.5, NaN, Infinity, 2 ** 31, 2 ** 32, 2 ** 32 + 1, -(2 ** 32)][pick(10)];
    const perBatch = pick(2) === 1;
    const globalTokens = perBatch
      ? Array.from({ length: b.options.batch }, (_, i) => (i === b.options.batch - 1 ? [0, bad] : [0]))
      : [0, bad];
    return invalid(`globalTokens ${JSON.stringify(globalTokens)}`, built, RangeError, ['options.globalTokens'], { options: { ...built.options, globalTokens } });
  },
  'per-batch global lists of the wrong count': (b, built, pick) => {
    if (b.kind === 'full') return invalid('window on fullAttention', built, RangeError, ['options.window'], { options: { ...built.options, window: 3 } });
    const count = b.options.batch === 1 || pick(2) === 0 ? b.options.batch + 1 : b.options.batch - 1;
    const globalTokens = Array.from({ length: count }, () => [0]);
    return invalid(`${count} global lists for batch ${b.options.batch}`, built, RangeError, ['options.globalTokens'], { options: { ...built.options, globalTokens } });
  },
  'kvLengths of the wrong count or out of range': (b, built, pick) => {
    const n = b.options.kvSeqLen;
    const batch = b.options.batch;
    const lists = [Array(batch + 1).fill(0), Array(batch).fill(n + 1), Array(batch).fill(-1), Array(batch).fill(0.5),
      Array(batch).fill(NaN), Array(batch).fill(2 ** 32), Float64Array.from({ length: batch }, () => Infinity)];
    if (batch > 1) lists.push(Array(batch - 1).fill(0));
    const kvLengths = lists[pick(lists.length)];
    return invalid(`kvLengths ${String(kvLengths)}`, built, RangeError, ['options.kvLengths'], { options: { ...built.options, kvLengths } });
  },
  'qLengths of the wrong count, out of [0, seqLen], not integers or not a list': (b, built, pick) => {
    const { batch, seqLen } = b.options;
    const ranged: unknown[] = [Array(batch + 1).fill(0), [], Array(batch).fill(seqLen + 1), Array(batch).fill(-1), Array(batch).fill(0.5),
      Array(batch).fill(NaN), Array(batch).fill(2 ** 32), Float64Array.from({ length: batch }, () => Infinity),
      Array.from({ length: batch }, (_, i) => (i === batch - 1 ? seqLen + 1 : 0))];
    if (batch > 1) ranged.push(Array(batch - 1).fill(0));
    const typed: unknown[] = [seqLen, 'ab', null, true, { length: batch }, Array(batch).fill('1'), Array(batch).fill(null), Array(batch).fill(1n)];
    const isType = pick(3) === 0;
    const qLengths = isType ? typed[pick(typed.length)] : ranged[pick(ranged.length)];
    return invalid(`qLengths ${String(qLengths)}`, built, isType ? TypeError : RangeError, ['options.qLengths'], { options: { ...built.options, qLengths } });
  },
  'a softcap that is negative, non-finite, too large for a float32 or not a number': (_b, built, pick) => {
    const ranged = [-1, -0.5, -Number.MIN_VALUE, NaN, Infinity, -Infinity, 1e39, Number.MAX_VALUE];
    const typed: unknown[] = ['30', null, true, [30], 30n, {}];
    const isType = pick(3) === 0;
    const softcap = isType ? typed[pick(typed.length)] : ranged[pick(ranged.length)];
    return invalid(`softcap ${String(softcap)}`, built, isType ? TypeError : RangeError, ['options.softcap'], { options: { ...built.options, softcap } });
  },
  'alibiSlopes or sinkLogits of the wrong length, non-finite, not numbers or not a list': (b, built, pick) => {
    const { heads, kvHeads } = b.options;
    const key = pick(2) === 0 ? 'alibiSlopes' : 'sinkLogits';
    const at = pick(heads);
    const withEntry = (x: unknown) => Array.from({ length: heads }, (_, h) => (h === at ? x : 0.5));
    const ranged: unknown[] = [Array(heads + 1).fill(0), [], withEntry(NaN), withEntry(Infinity), withEntry(-Infinity), withEntry(1e39),
      Float64Array.from({ length: heads }, () => -1e300)];
    if (kvHeads !== heads) ranged.push(Array(kvHeads).fill(0)); // one per kv head is not enough
    if (heads > 1) ranged.push(new Float32Array(heads - 1));
    const typed: unknown[] = [0.5, '0.5', null, { length: heads }, withEntry('1'), withEntry(null), withEntry(1n), withEntry([1]), withEntry(undefined)];
    const isType = pick(3) === 0;
    const value = isType ? typed[pick(typed.length)] : ranged[pick(ranged.length)];
    return invalid(`${key} ${String(value)}`, built, isType ? TypeError : RangeError, [`options.${key}`], { options: { ...built.options, [key]: value } });
  },
  'a paged cache gone wrong: an entry outside the pool, a table or pageSize of the wrong kind, a pool of the wrong length': (b, built, pick) => {
    const paged = pagedDraw(b, built, pick);
    const options = { ...built.options, blockTable: paged.blockTable, pageSize: paged.pageSize, kvLengths: paged.kvLengths };
    const patch = { k: paged.k, v: paged.v };
    const choice = pick(paged.usedEntries.length > 0 ? 6 : 5);
    if (choice === 0) {
      return invalid('blockTable as a plain array', built, TypeError, ['options.blockTable'], { ...patch, options: { ...options, blockTable: Array.from(paged.blockTable) } });
    }
    if (choice === 1) {
      const pageSize = [0, -1, 1.5, NaN, 2 ** 31][pick(5)];
      return invalid(`pageSize ${pageSize}`, built, RangeError, ['options.pageSize'], { ...patch, options: { ...options, pageSize } });
    }
    if (choice === 2) {
      const pageSize = ['16', null, undefined][pick(3)];
      return invalid(`pageSize ${String(pageSize)}`, built, TypeError, ['options.pageSize'], { ...patch, options: { ...options, pageSize } });
    }
    if (choice === 3) {
      return invalid('a block table of a length that is not a multiple of batch', built, RangeError, ['options.blockTable'], {
        ...patch, options: { ...options, blockTable: new Int32Array(b.options.batch === 1 ? 0 : b.options.batch * 3 + 1) },
      });
    }
    if (choice === 4) {
      // One element short: k is then part of a page (or, with 1-element pages, v no longer matches it).
      const which = pick(2) === 0 ? 'k' : 'v';
      const cut = (x: unknown) => (x as Float32Array).subarray(0, (x as Float32Array).length - 1);
      return invalid(`${which} one element short of whole pages`, built, RangeError, which === 'k' ? ['k', 'v'] : ['v'], { ...patch, options, [which]: cut(patch[which]) });
    }
    const blockTable = paged.blockTable.slice();
    const at = paged.usedEntries[pick(paged.usedEntries.length)];
    blockTable[at] = [-1, paged.pageCount, 2 ** 31 - 1, -(2 ** 31)][pick(4)];
    return invalid(`blockTable[${at}] = ${blockTable[at]}`, built, RangeError, [`options.blockTable[${at}]`], { ...patch, options: { ...options, blockTable } });
  },
  'a scale that is not finite': (_b, built, pick) => {
    const scale = [NaN, Infinity, -Infinity][pick(3)];
    return invalid(`scale ${scale}`, built, RangeError, ['options.scale'], { options: { ...built.options, scale } });
  },
  'a bad causal, layout or backend': (_b, built, pick) => {
    const bad: Array<[string, unknown, typeof TypeError | typeof RangeError]> = [
      ['causal', 1, TypeError], ['causal', 'true', TypeError], ['causal', null, TypeError],
      ['layout', 'bsdh', RangeError], ['layout', 0, TypeError], ['backend', 'gpu', RangeError], ['backend', '', RangeError],
      ['backend', 3, TypeError],
    ];
    const [key, value, error] = bad[pick(bad.length)];
    return invalid(`${key} = ${String(value)}`, built, error, [`options.${key}`], { options: { ...built.options, [key]: value } });
  },
  'options that are not an options object, or have an unknown key': (_b, built, pick) => {
    const choice = pick(6);
    if (choice === 5) return invalid('unknown key', built, RangeError, ['options'], { options: { ...built.options, casual: true } });
    const options = [null, 5, 'options', [], new Float32Array(4)][choice];
    return invalid(`options = ${String(options)}`, built, TypeError, ['options'], { options: options as never });
  },
};

const MUTATION_NAMES = Object.keys(MUTATIONS);

// The mutations written for Float32Array q, k, v, out; every other one gets the drawn storage.
const FLOAT32_ONLY: ReadonlySet<string> = new Set([
  'as drawn (subarrays at odd offsets, SharedArrayBuffers)', 'a Float32Array subclass',
  'a buffer transferred or shrunk while an async call runs', 'out aliasing q, k or v, or lse aliasing an input',
]);
for (const name of FLOAT32_ONLY) if (!(name in MUTATIONS)) throw new Error(`FLOAT32_ONLY names no mutation ${name}`);

const drawn = fc.tuple(base, fc.infiniteStream(fc.nat())).map(([b, stream]) => ({ b, stream }));

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

const CALL_TIMEOUT_MS = 20_000;

/** The element types a call's options (and a Float16Array q) select, as the contract states them. */
function numericsOf(s: Scenario): { dtype: DType; outDtype: DType; precision: Precision } {
  const o = s.options;
  const dtype = (o.dtype as DType | undefined) ?? (typedArrayName(s.q) === 'Float16Array' ? 'float16' : 'float32');
  const outDtype = (o.outDtype as DType | undefined) ?? dtype;
  const precision = (o.precision as Precision | undefined) ?? (dtype === 'bfloat16' ? 'bfloat16' : 'float32');
  return { dtype, outDtype, precision };
}

async function check(kind: Kind, mode: Mode, s: Scenario, guards: Guard[], outGuard: { g: Guard; from: number; to: number }[]): Promise<void> {
  let result: unknown;
  let thrown: unknown;
  const expected = mode === 'sync' && s.during !== undefined ? s.during.syncExpect : s.expect;
  if (mode === 'sync') {
    try {
      result = await attention(kind, 'sync', s.q, s.k, s.v, s.options);
    } catch (error) {
      thrown = error;
    }
  } else {
    let promise: Promise<unknown> | undefined;
    // The async functions must reject, never throw: a server's `.catch` would miss a throw.
    expect(() => {
      promise = attention(kind, 'async', s.q, s.k, s.v, s.options);
    }).not.toThrow();
    s.during?.act();
    try {
      result = await withTimeout(promise as Promise<unknown>, CALL_TIMEOUT_MS, `${s.label} (async)`);
    } catch (error) {
      thrown = error;
    }
  }

  for (const g of guards) {
    const changed = changedOutside(g);
    if (changed !== null) expect.fail(`${s.label}: ${changed} (an input was written)`);
  }

  if (expected.ok) {
    if (thrown !== undefined) expect.fail(`${s.label}: a valid call threw ${String(thrown)}`);
    const lse = (s.options.lse as Float32Array | undefined) ?? null;
    if (s.options.out !== undefined) expect(result).toBe(s.options.out);
    else expect(typedArrayName(result), s.label).toBe(expectedResultName(numericsOf(s).outDtype));
    const { dtype, outDtype, precision } = numericsOf(s);
    // The reference of the values the bits stand for, decoded independently of lib/half.ts.
    const inputs = s.during?.inputs ?? s.referenceInputs ?? { q: tensorValues(dtype, s.q), k: tensorValues(dtype, s.k), v: tensorValues(dtype, s.v) };
    const want = referenceAttention(inputs.q, inputs.k, inputs.v, expected.reference);
    if (dtype === 'float32' && outDtype === 'float32' && precision === 'float32') {
      try {
        expectMatchesReference(expected.reference, want, result as Float32Array, lse);
      } catch (error) {
        // The label says which mutation (and which serving options) the draw made.
        throw new Error(`${s.label}: ${(error as Error).message}`);
      }
    } else {
      const values = tensorValues(outDtype, result);
      // precisionMismatches finds empty rows by lse -Infinity; with sinkLogits an empty row's lse is
      // the sink. bfloat16 products: see bfloat16Mismatches (out relative to the reference on |v|,
      // a half out rounded once more, lse allowing for the scores' rounding).
      const found = precision === 'bfloat16'
        ? bfloat16Mismatches(expected.reference, want, inputs, values, lse, outDtype)
        : [...precisionMismatches(expected.reference, want, values, lse, outDtype, precision), ...emptyRowMismatches(expected.reference, want, values)];
      if (found.length > 0) expect.fail(`${s.label} (${dtype} → ${outDtype}, precision ${precision}): ${found.join('; ')}`);
    }
    for (const { g, from, to } of outGuard) {
      const changed = changedOutside(g, from, to);
      if (changed !== null) expect.fail(`${s.label}: ${changed}, outside the view the call may write`);
    }
    return;
  }

  if (thrown === undefined) expect.fail(`${s.label}: an invalid call returned instead of throwing ${expected.error.name}`);
  const error = thrown as Error;
  const pattern = new RegExp(`^(?:${expected.names.map(escape).join('|')})[ \\[]`);
  if (!(error instanceof expected.error) || !pattern.test(error.message)) {
    expect.fail(`${s.label}: expected a ${expected.error.name} naming ${expected.names.join(' or ')}, got ${error?.constructor?.name}: ${error?.message}`);
  }
  // Validation happens before any backend runs, so a rejected call leaves out and lse alone too.
  // A call rejected at settlement (an output given up mid-call) delivers nothing to a non-shared
  // output; one on shared memory is written in place as the call runs, but only inside its view.
  for (const { g, from, to } of outGuard) {
    const inPlace = s.during !== undefined && g.bytes.buffer instanceof SharedArrayBuffer;
    const changed = inPlace ? changedOutside(g, from, to) : changedOutside(g);
    if (changed !== null) expect.fail(`${s.label}: ${changed} although the call was rejected`);
  }
}

function guardsFor(s: Scenario): { guards: Guard[]; outGuard: { g: Guard; from: number; to: number }[] } {
  const guards: Guard[] = [];
  const outGuard: { g: Guard; from: number; to: number }[] = [];
  const usable = (x: unknown): x is Float32Array => ArrayBuffer.isView(x) && x.buffer.byteLength > 0;
  const writable = new Set<unknown>();
  const opts = typeof s.options === 'object' && s.options !== null ? s.options : {};
  // Memory the caller gives up mid-call is no longer its to guard.
  const givenUp = s.during?.givenUp;
  for (const name of ['out', 'lse'] as const) {
    const view = (opts as Record<string, unknown>)[name];
    if (!usable(view) || name === givenUp) continue;
    writable.add(view.buffer);
    outGuard.push({ g: guard(`options.${name}`, view), from: view.byteOffset, to: view.byteOffset + view.byteLength });
  }
  for (const [name, view] of [['q', s.q], ['k', s.k], ['v', s.v]] as const) {
    // An input sharing memory with out is an invalid call: the whole buffer is then checked by outGuard.
    if (usable(view) && !writable.has(view.buffer) && name !== givenUp) guards.push(guard(name, view));
  }
  return { guards, outGuard };
}

// Per mutation, so that every kind of bad input is drawn on every run, not just most of them.
const RUNS = Number(process.env.GLA_FUZZ_RUNS ?? (HEAVY ? 60 : 6));

describe.each(BACKENDS)('boundary fuzzing on the %s backend', (backend) => {
  it.each(MODES)('%s: every drawn call computes the reference or throws a TypeError/RangeError naming the argument', async (mode) => {
    for (const mutation of MUTATION_NAMES) {
      await fc.assert(
        fc.asyncProperty(drawn, async ({ b, stream }) => {
          const draws = stream[Symbol.iterator]();
          const pick = (n: number): number => (draws.next().value as number) % n;
          const s = MUTATIONS[mutation](b, build(b, backend, FLOAT32_ONLY.has(mutation) ? FLOAT32 : b.storage), pick);
          const { guards, outGuard } = guardsFor(s);
          await check(b.kind, mode, s, guards, outGuard);
        }),
        { numRuns: RUNS },
      );
    }
  });
});
// Every backend computes in float32, so a scale finite as a double but not as a float32 is invalid.
describe('a scale that is finite as a double but not as a float32', () => {
  it('throws a RangeError naming options.scale on every backend', async () => {
    const p = makeProblem('full', { batch: 1, heads: 1, seqLen: 4, headDim: 4 }, 1);
    for (const backend of BACKENDS) {
      for (const mode of MODES) {
        for (const scale of [1e39, -1e39, 1e308]) {
          await expect(attention('full', mode, p.q, p.k, p.v, { ...p.options, scale, backend }), `${backend} ${mode} scale ${scale}`)
            .rejects.toThrow(expect.objectContaining({ name: 'RangeError', message: expect.stringMatching(/^options\.scale /) }));
        }
      }
    }
  });
});
