// mergeAttentionStates / mergeAttentionStatesSync. The reference is the package's own attention over
// the union of the keys: split a problem's keys into disjoint sets, run one call per set with lse,
// merge, and compare with one call over every key. A float64 merge written here checks what the
// attention calls cannot produce (NaN, +Infinity, garbage in masked parts, random states).
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { halfValues, toHalfBits } from './helpers/half-bits';
import { gla } from './helpers/package';
import { randomNonZero, rng, seedOf } from './helpers/random';

type Layout = 'bhsd' | 'bshd';

interface Shape {
  batch: number;
  heads: number;
  kvHeads: number;
  seqLen: number;
  kvSeqLen: number;
  headDim: number;
  layout: Layout;
}

interface State {
  out: Float32Array;
  lse: Float32Array;
}

const TOLERANCE = 1e-5;

function mergeShape(s: Pick<Shape, 'batch' | 'heads' | 'seqLen' | 'headDim' | 'layout'>) {
  return { batch: s.batch, heads: s.heads, seqLen: s.seqLen, headDim: s.headDim, layout: s.layout };
}

function attentionOptions(s: Shape) {
  return {
    batch: s.batch, heads: s.heads, kvHeads: s.kvHeads, seqLen: s.seqLen, kvSeqLen: s.kvSeqLen,
    headDim: s.headDim, layout: s.layout, backend: 'js' as const,
  };
}

function inputs(name: string, s: Shape): { q: Float32Array; k: Float32Array; v: Float32Array } {
  const random = rng(seedOf(name));
  const nq = s.batch * s.heads * s.seqLen * s.headDim;
  const nkv = s.batch * s.kvHeads * s.kvSeqLen * s.headDim;
  return { q: randomNonZero(nq, random), k: randomNonZero(nkv, random), v: randomNonZero(nkv, random) };
}

/** Keys (or values) [from, to) of every batch item and kv head, as a tensor of kvSeqLen to − from. */
function sliceKeys(x: Float32Array, s: Shape, from: number, to: number): Float32Array {
  const length = to - from;
  const { batch, kvHeads, kvSeqLen, headDim } = s;
  const y = new Float32Array(batch * kvHeads * length * headDim);
  const at = (b: number, h: number, j: number, n: number) =>
    s.layout === 'bhsd' ? ((b * kvHeads + h) * n + j) * headDim : ((b * n + j) * kvHeads + h) * headDim;
  for (let b = 0; b < batch; b++) {
    for (let h = 0; h < kvHeads; h++) {
      for (let j = from; j < to; j++) y.set(x.subarray(at(b, h, j, kvSeqLen), at(b, h, j, kvSeqLen) + headDim), at(b, h, j - from, length));
    }
  }
  return y;
}

function lseLength(s: { batch: number; heads: number; seqLen: number }): number {
  return s.batch * s.heads * s.seqLen;
}

function full(q: Float32Array, k: Float32Array, v: Float32Array, s: Shape, extra: Record<string, unknown> = {}): State {
  const lse = new Float32Array(lseLength(s));
  const out = gla.fullAttentionSync(q, k, v, { ...attentionOptions(s), ...extra, lse });
  return { out, lse };
}

/** Row (b, h, i)'s first element in out. */
function rowOffset(s: Pick<Shape, 'heads' | 'seqLen' | 'headDim' | 'layout'>, b: number, h: number, i: number): number {
  return s.layout === 'bhsd' ? ((b * s.heads + h) * s.seqLen + i) * s.headDim : ((b * s.seqLen + i) * s.heads + h) * s.headDim;
}

/** The merge in float64, written from its definition, row by row. */
function referenceMerge(
  parts: Array<{ out: ArrayLike<number>; lse: ArrayLike<number> }>,
  s: Pick<Shape, 'batch' | 'heads' | 'seqLen' | 'headDim' | 'layout'>,
): { out: Float64Array; lse: Float64Array } {
  const out = new Float64Array(parts[0].out.length);
  const lse = new Float64Array(parts[0].lse.length);
  for (let b = 0; b < s.batch; b++) {
    for (let h = 0; h < s.heads; h++) {
      for (let i = 0; i < s.seqLen; i++) {
        const r = (b * s.heads + h) * s.seqLen + i;
        const o = rowOffset(s, b, h, i);
        const live = parts.filter((p) => p.lse[r] !== -Infinity);
        if (live.length === 0) {
          lse[r] = -Infinity;
          continue;
        }
        const m = Math.max(...live.map((p) => p.lse[r]));
        const L = live.some((p) => Number.isNaN(p.lse[r])) || m === Infinity
          ? NaN
          : m + Math.log(live.reduce((sum, p) => sum + Math.exp(p.lse[r] - m), 0));
        lse[r] = L;
        for (const p of live) {
          const w = Math.exp(p.lse[r] - L);
          for (let d = 0; d < s.headDim; d++) out[o + d] += w * p.out[o + d];
        }
      }
    }
  }
  return { out, lse };
}

/** Element by element: within TOLERANCE·(|expected| + 1); NaN and ±Infinity exactly. */
function expectClose(actual: ArrayLike<number>, expected: ArrayLike<number>, what: string, tolerance = TOLERANCE): void {
  expect(actual.length, `${what} length`).toBe(expected.length);
  const bad: string[] = [];
  for (let i = 0; i < expected.length && bad.length < 5; i++) {
    const a = actual[i];
    const e = expected[i];
    const ok = Number.isFinite(e) ? Math.abs(a - e) <= tolerance * (Math.abs(e) + 1) : Object.is(a, e) || (Number.isNaN(a) && Number.isNaN(e));
    if (!ok) bad.push(`[${i}] ${a} vs ${e}`);
  }
  expect(bad, `${what}: elements off`).toEqual([]);
}

function expectMerged(merged: { out: ArrayLike<number>; lse: ArrayLike<number> }, union: State, what: string): void {
  expectClose(merged.out, union.out, `${what} out`);
  // expectClose compares ±Infinity exactly: a row that sees no key is −Infinity, as in one call.
  expectClose(merged.lse, union.lse, `${what} lse`);
}

const MODES = ['sync', 'async'] as const;
type Mode = (typeof MODES)[number];

/** Arguments are passed through untyped (error cases send invalid ones); Node 20 has no Float16Array. */
async function merge(mode: Mode, parts: unknown, options: unknown): Promise<{ out: Float32Array | Uint16Array; lse: Float32Array }> {
  const args = [parts, options] as unknown as Parameters<typeof gla.mergeAttentionStatesSync>;
  const result = mode === 'sync' ? gla.mergeAttentionStatesSync(...args) : await gla.mergeAttentionStates(...args);
  return result as { out: Float32Array | Uint16Array; lse: Float32Array };
}

describe.each(MODES)('%s: merging parts over disjoint keys equals one call over all of them', (mode) => {
  const base: Shape = { batch: 2, heads: 4, kvHeads: 2, seqLen: 7, kvSeqLen: 23, headDim: 9, layout: 'bhsd' };

  it.each(['bhsd', 'bshd'] as const)('two parts by kvLengths and a slice (%s)', async (layout) => {
    const s = { ...base, layout };
    const { q, k, v } = inputs(`two ${layout}`, s);
    const n1 = 10;
    const a = full(q, k, v, s, { kvLengths: [n1, n1] });
    const rest = { ...s, kvSeqLen: s.kvSeqLen - n1 };
    const b = full(q, sliceKeys(k, s, n1, s.kvSeqLen), sliceKeys(v, s, n1, s.kvSeqLen), rest);
    const merged = await merge(mode, [a, b], mergeShape(s));
    expect(merged.out).toBeInstanceOf(Float32Array);
    expectMerged(merged, full(q, k, v, s), 'merged');
    // In either order.
    expectMerged(await merge(mode, [b, a], mergeShape(s)), full(q, k, v, s), 'merged b, a');
  });

  it.each(['bhsd', 'bshd'] as const)('three parts, one of them seeing no key for batch item 1 (%s)', async (layout) => {
    const s = { ...base, layout };
    const { q, k, v } = inputs(`three ${layout}`, s);
    const [n1, n2] = [6, 15];
    const a = full(q, k, v, s, { kvLengths: [n1, n1] });
    const middle = { ...s, kvSeqLen: n2 - n1 };
    // Item 0 sees keys [n1, n2) here; item 1 sees none of them (kvLengths 0), and gets them below.
    const b = full(q, sliceKeys(k, s, n1, n2), sliceKeys(v, s, n1, n2), middle, { kvLengths: [n2 - n1, 0] });
    const c0 = full(q, sliceKeys(k, s, n2, s.kvSeqLen), sliceKeys(v, s, n2, s.kvSeqLen), { ...s, kvSeqLen: s.kvSeqLen - n2 });
    const c1 = full(q, sliceKeys(k, s, n1, s.kvSeqLen), sliceKeys(v, s, n1, s.kvSeqLen), { ...s, kvSeqLen: s.kvSeqLen - n1 });
    // c: keys [n2, n) for item 0 and [n1, n) for item 1, stitched per batch item.
    const half = s.heads * s.seqLen;
    const c: State = { out: c0.out.slice(), lse: c0.lse.slice() };
    c.out.set(c1.out.subarray(half * s.headDim), half * s.headDim);
    c.lse.set(c1.lse.subarray(half), half);
    expect(b.lse.subarray(half).every((x) => x === -Infinity)).toBe(true);
    expectMerged(await merge(mode, [a, b, c], mergeShape(s)), full(q, k, v, s), 'merged');
  });

  it.each(['bhsd', 'bshd'] as const)('causal: a local window plus the keys before it; rows that see nothing (%s)', async (layout) => {
    // seqLen > kvSeqLen: the first rows sit before every key (zeros, −Infinity in every part), and
    // the earlier-keys part sees nothing for rows whose window reaches back to key 0.
    const s: Shape = { ...base, layout, seqLen: 20, kvSeqLen: 16 };
    const { q, k, v } = inputs(`causal ${layout}`, s);
    const W = 5;
    const local = { lse: new Float32Array(lseLength(s)) } as State;
    local.out = gla.localGlobalAttentionSync(q, k, v, { ...attentionOptions(s), causal: true, window: [W - 1, 0], lse: local.lse });
    // Query at position p sees keys j <= p - W: causal attention over the first kvSeqLen − W keys.
    const earlier = full(q, sliceKeys(k, s, 0, s.kvSeqLen - W), sliceKeys(v, s, 0, s.kvSeqLen - W), { ...s, kvSeqLen: s.kvSeqLen - W }, { causal: true });
    expect(earlier.lse.some((x) => x === -Infinity) && earlier.lse.some((x) => x !== -Infinity)).toBe(true);
    const union = full(q, k, v, s, { causal: true });
    expect(union.lse.some((x) => x === -Infinity)).toBe(true);
    const merged = await merge(mode, [local, earlier], mergeShape(s));
    expectMerged(merged, union, 'merged');
    for (let r = 0; r < union.lse.length; r++) {
      if (union.lse[r] !== -Infinity) continue;
      const b = Math.floor(r / (s.heads * s.seqLen));
      const h = Math.floor(r / s.seqLen) % s.heads;
      const o = rowOffset(s, b, h, r % s.seqLen);
      expect(Array.from(merged.out.slice(o, o + s.headDim))).toEqual(new Array(s.headDim).fill(0));
    }
  });

  it('one part is itself', async () => {
    const s = base;
    const { q, k, v } = inputs('one', s);
    const a = full(q, k, v, s);
    const merged = await merge(mode, [a], mergeShape(s));
    expect(Array.from(merged.out)).toEqual(Array.from(a.out));
    expect(Array.from(merged.lse)).toEqual(Array.from(a.lse));
  });

  it('bfloat16 parts: a bfloat16 result close to one bfloat16 call; a float32 result equal to merging their exact values', async () => {
    const s = { ...base, headDim: 16 };
    const f = inputs('bfloat16', s);
    const [q, k, v] = [f.q, f.k, f.v].map((x) => toHalfBits('bfloat16', x));
    const n1 = 11;
    const bits = (qq: Uint16Array, kk: Uint16Array, vv: Uint16Array, shape: Shape, extra: Record<string, unknown> = {}) => {
      const lse = new Float32Array(lseLength(shape));
      const out = gla.fullAttentionSync(qq, kk, vv, { ...attentionOptions(shape), dtype: 'bfloat16', ...extra, lse }) as Uint16Array;
      return { out, lse };
    };
    const sliceBits = (x: Uint16Array, from: number, to: number) =>
      toHalfBits('bfloat16', sliceKeys(halfValues('bfloat16', x), s, from, to));
    const a = bits(q, k, v, s, { kvLengths: [n1, n1] });
    const b = bits(q, sliceBits(k, n1, s.kvSeqLen), sliceBits(v, n1, s.kvSeqLen), { ...s, kvSeqLen: s.kvSeqLen - n1 });
    const union = bits(q, k, v, s);
    expect(a.out).toBeInstanceOf(Uint16Array);

    const merged = await merge(mode, [a, b], { ...mergeShape(s), dtype: 'bfloat16' });
    expect(merged.out).toBeInstanceOf(Uint16Array);
    // Each part is rounded to bfloat16 (2⁻⁹ relative), then the merge once more.
    expectClose(halfValues('bfloat16', merged.out as Uint16Array), halfValues('bfloat16', union.out), 'bfloat16 out', 2 ** -6);
    expectClose(merged.lse, union.lse, 'bfloat16 lse');

    const wide = await merge(mode, [a, b], { ...mergeShape(s), dtype: 'bfloat16', outDtype: 'float32' });
    expect(wide.out).toBeInstanceOf(Float32Array);
    const decoded = [a, b].map((p) => ({ out: halfValues('bfloat16', p.out), lse: p.lse }));
    const exact = await merge(mode, decoded, mergeShape(s));
    expect(Array.from(wide.out)).toEqual(Array.from(exact.out));
    expectClose(wide.out, referenceMerge(decoded, s).out, 'float32 result of bfloat16 parts');
    // float32 parts to a bfloat16 result: the float32 merge, rounded.
    const narrow = await merge(mode, decoded, { ...mergeShape(s), outDtype: 'bfloat16' });
    expect(Array.from(narrow.out)).toEqual(Array.from(gla.encodeBfloat16(exact.out as Float32Array)));
  });

  it('float16 parts as Uint16Array bits', async () => {
    const s = { ...base, headDim: 4 };
    const random = rng(7);
    const parts = [0, 1].map(() => ({
      out: toHalfBits('float16', randomNonZero(s.batch * s.heads * s.seqLen * s.headDim, random)),
      lse: randomNonZero(lseLength(s), random, 5),
    }));
    const merged = await merge(mode, parts, { ...mergeShape(s), dtype: 'float16', outDtype: 'float32' });
    const decoded = parts.map((p) => ({ out: halfValues('float16', p.out), lse: p.lse }));
    expectClose(merged.out, referenceMerge(decoded, s).out, 'out');
    const narrow = await merge(mode, parts, { ...mergeShape(s), dtype: 'float16' });
    expect(Array.from(narrow.out)).toEqual(Array.from(gla.encodeFloat16(merged.out as Float32Array)));
  });
});

describe.each(MODES)('%s: special values', (mode) => {
  const s = { batch: 1, heads: 2, seqLen: 3, headDim: 4, layout: 'bhsd' as Layout };
  const N = 24;
  const L = 6;
  const part = (seed: number): State => {
    const random = rng(seed);
    return { out: randomNonZero(N, random), lse: randomNonZero(L, random, 3) };
  };

  it('every part −Infinity: zeros and −Infinity, and the masked parts\' out rows are not read', async () => {
    const a = part(1);
    const b = part(2);
    a.lse[1] = b.lse[1] = -Infinity;
    a.out.fill(NaN, 4, 8);
    b.out.fill(Infinity, 4, 8);
    // Row 2: only b is masked; its garbage stays out.
    b.lse[2] = -Infinity;
    b.out.fill(NaN, 8, 12);
    const merged = await merge(mode, [a, b], s);
    expect(merged.lse[1]).toBe(-Infinity);
    expect(Array.from(merged.out.slice(4, 8))).toEqual([0, 0, 0, 0]);
    expect(merged.lse[2]).toBe(a.lse[2]);
    expect(Array.from(merged.out.slice(8, 12))).toEqual(Array.from(a.out.slice(8, 12)));
    expect(Array.from(merged.out).some(Number.isNaN)).toBe(false);
    expectClose(merged.out, referenceMerge([a, b], s).out, 'out');
  });

  it('a NaN lse makes its row NaN; a NaN in a part\'s out, that column; a +Infinity lse, the row', async () => {
    const a = part(3);
    const b = part(4);
    a.lse[0] = NaN;
    b.out[4 + 2] = NaN; // row 1, column 2
    b.lse[2] = Infinity;
    const merged = await merge(mode, [a, b], s);
    expect(merged.lse[0]).toBeNaN();
    expect(Array.from(merged.out.slice(0, 4)).every(Number.isNaN)).toBe(true);
    expect(Number.isFinite(merged.lse[1])).toBe(true);
    expect(Array.from(merged.out.slice(4, 8)).map(Number.isNaN)).toEqual([false, false, true, false]);
    expect(merged.lse[2]).toBeNaN();
    expect(Array.from(merged.out.slice(8, 12)).every(Number.isNaN)).toBe(true);
    // The other rows are untouched by the NaNs.
    expectClose(merged.out.slice(12), referenceMerge([a, b], s).out.slice(12), 'the other rows');
    expect(Number.isFinite(merged.lse[3])).toBe(true);
  });

  it('large lse values (the logits of 1e9) merge without overflow', async () => {
    const a = part(5);
    const b = part(6);
    a.lse.fill(1e9);
    b.lse.fill(1e9 + 64); // float32 spacing at 1e9 is 64
    const merged = await merge(mode, [a, b], s);
    expectClose(merged.out, referenceMerge([a, b], s).out, 'out');
    expect(Array.from(merged.lse).every((x) => x === Math.fround(1e9 + 64))).toBe(true);
  });
});

describe('associativity (fast-check)', () => {
  // lse values in ±30, and now and then −Infinity (a part that saw no key for that row).
  const lseArbitrary = (rows: number) =>
    fc.array(
      fc.oneof({ weight: 6, arbitrary: fc.float({ min: -30, max: 30, noNaN: true }) }, { weight: 1, arbitrary: fc.constant(-Infinity) }),
      { minLength: rows, maxLength: rows },
    );
  const drawn = fc
    .record({
      batch: fc.integer({ min: 1, max: 2 }),
      heads: fc.integer({ min: 1, max: 3 }),
      seqLen: fc.integer({ min: 1, max: 4 }),
      headDim: fc.integer({ min: 1, max: 5 }),
      layout: fc.constantFrom<Layout>('bhsd', 'bshd'),
    })
    .chain((shape) => {
      const rows = shape.batch * shape.heads * shape.seqLen;
      return fc.record({
        shape: fc.constant(shape),
        parts: fc.array(
          fc.record({
            out: fc.array(fc.float({ min: -4, max: 4, noNaN: true }), { minLength: rows * shape.headDim, maxLength: rows * shape.headDim }),
            lse: lseArbitrary(rows),
          }),
          { minLength: 3, maxLength: 3 },
        ),
      });
    });

  it('merge(merge(a, b), c) ≈ merge(a, merge(b, c)) ≈ merge(a, b, c) ≈ the float64 reference', () => {
    fc.assert(
      fc.property(drawn, ({ shape, parts }) => {
        const [a, b, c] = parts.map((p) => ({ out: Float32Array.from(p.out), lse: Float32Array.from(p.lse) }));
        const m = (xs: State[]) => gla.mergeAttentionStatesSync(xs, shape);
        const left = m([m([a, b]), c]);
        const right = m([a, m([b, c])]);
        const flat = m([a, b, c]);
        const reference = referenceMerge([a, b, c], shape);
        // Each inner merge rounds out and lse to float32 once more.
        for (const [name, x] of [['left', left], ['right', right], ['flat', flat]] as const) {
          expectClose(x.out, reference.out, `${name} out`);
          expectClose(x.lse, reference.lse, `${name} lse`, 1e-6);
        }
        expectClose(left.out, right.out, 'left vs right out');
        expectClose(left.lse, right.lse, 'left vs right lse', 1e-6);
      }),
      { numRuns: 200 },
    );
  });
});

describe.each(MODES)('%s: options.out and options.lse', (mode) => {
  const s = { batch: 2, heads: 2, seqLen: 3, headDim: 5, layout: 'bshd' as Layout };
  const N = 60;
  const L = 12;
  const parts = [1, 2, 3].map((seed) => {
    const random = rng(seed);
    return { out: randomNonZero(N, random), lse: randomNonZero(L, random, 4) };
  });

  it('are filled (every element) and returned; nothing around them is written', async () => {
    const GUARD = 3;
    const SENTINEL = 777;
    const buffer = new Float32Array(GUARD * 3 + N + L).fill(SENTINEL);
    const out = buffer.subarray(GUARD, GUARD + N).fill(NaN);
    const lse = buffer.subarray(GUARD * 2 + N, GUARD * 2 + N + L).fill(NaN);
    const merged = await merge(mode, parts, { ...s, out, lse });
    expect(merged.out).toBe(out);
    expect(merged.lse).toBe(lse);
    const expected = gla.mergeAttentionStatesSync(parts, s);
    expect(Array.from(out)).toEqual(Array.from(expected.out));
    expect(Array.from(lse)).toEqual(Array.from(expected.lse));
    const guards = [...buffer.subarray(0, GUARD), ...buffer.subarray(GUARD + N, GUARD * 2 + N), ...buffer.subarray(GUARD * 2 + N + L)];
    expect(guards.every((x) => x === SENTINEL)).toBe(true);
  });

  it('out alone, lse alone, and a bfloat16 out', async () => {
    const expected = gla.mergeAttentionStatesSync(parts, s);
    const out = new Float32Array(N);
    const a = await merge(mode, parts, { ...s, out });
    expect(a.out).toBe(out);
    expect(Array.from(a.lse)).toEqual(Array.from(expected.lse));
    const lse = new Float32Array(L);
    const b = await merge(mode, parts, { ...s, lse });
    expect(b.lse).toBe(lse);
    expect(Array.from(b.out)).toEqual(Array.from(expected.out));
    const bits = new Uint16Array(N);
    const c = await merge(mode, parts, { ...s, outDtype: 'bfloat16', out: bits });
    expect(c.out).toBe(bits);
    expect(Array.from(bits)).toEqual(Array.from(gla.encodeBfloat16(expected.out)));
  });

  it('the inputs are not modified', async () => {
    const copies = parts.map((p) => ({ out: p.out.slice(), lse: p.lse.slice() }));
    await merge(mode, parts, s);
    parts.forEach((p, i) => {
      expect(Array.from(p.out)).toEqual(Array.from(copies[i].out));
      expect(Array.from(p.lse)).toEqual(Array.from(copies[i].lse));
    });
  });
});

describe('the async function on a large merge', () => {
  // 4 parts of 2²⁰ elements: several chunks of work, with event-loop turns between them.
  const s = { batch: 1, heads: 8, seqLen: 2048, headDim: 64, layout: 'bhsd' as Layout };
  const N = s.batch * s.heads * s.seqLen * s.headDim;
  const L = s.batch * s.heads * s.seqLen;
  const make = () => {
    const random = rng(11);
    return [0, 1, 2, 3].map(() => ({ out: randomNonZero(N, random), lse: randomNonZero(L, random, 10) }));
  };

  it('lets other macrotasks run before it settles, and equals the sync result', async () => {
    const parts = make();
    let turns = 0;
    let settled = false;
    const tick = () => {
      if (settled) return;
      turns++;
      setImmediate(tick);
    };
    setImmediate(tick);
    const result = await gla.mergeAttentionStates(parts, s);
    settled = true;
    expect(turns).toBeGreaterThan(1);
    const sync = gla.mergeAttentionStatesSync(parts, s);
    expect(result.out.every((x, i) => x === sync.out[i])).toBe(true);
    expect(result.lse.every((x, i) => x === sync.lse[i])).toBe(true);
  });

  it('a part transferred mid-call rejects naming it, and out and lse are not written', async () => {
    const parts = make();
    const out = new Float32Array(N).fill(5);
    const lse = new Float32Array(L).fill(5);
    const pending = gla.mergeAttentionStates(parts, { ...s, out, lse });
    structuredClone(parts[2].lse, { transfer: [parts[2].lse.buffer as ArrayBuffer] });
    await expect(pending).rejects.toThrow(/^parts\[2\]\.lse was detached .*while the call ran; the merge was abandoned and nothing was written$/);
    expect(out.every((x) => x === 5) && lse.every((x) => x === 5)).toBe(true);
  });

  it('an out transferred mid-call rejects naming it, and lse is not written', async () => {
    const parts = make();
    const out = new Float32Array(N);
    const lse = new Float32Array(L).fill(5);
    const pending = gla.mergeAttentionStates(parts, { ...s, out, lse });
    structuredClone(out, { transfer: [out.buffer] });
    await expect(pending).rejects.toThrow(/^options\.out was detached .*the result was discarded$/);
    expect(lse.every((x) => x === 5)).toBe(true);
  });
});

describe('bad input: TypeError/RangeError naming the argument; async rejects the same; nothing written', () => {
  const SHAPE = { batch: 1, heads: 2, seqLen: 3, headDim: 4 };
  const N = 24;
  const L = 6;
  interface Args {
    parts: unknown;
    options: Record<string, unknown>;
  }
  const valid = (): Args => ({
    parts: [
      { out: new Float32Array(N).fill(0.5), lse: new Float32Array(L).fill(1) },
      { out: new Float32Array(N).fill(0.25), lse: new Float32Array(L).fill(2) },
    ],
    options: { ...SHAPE },
  });
  const setPart = (i: number, patch: Record<string, unknown>) => (a: Args): Args => {
    const parts = [...(a.parts as object[])];
    parts[i] = { ...parts[i], ...patch };
    return { ...a, parts };
  };
  const dropPartKey = (i: number, key: string) => (a: Args): Args => {
    const parts = [...(a.parts as Array<Record<string, unknown>>)];
    const part = { ...parts[i] };
    delete part[key];
    parts[i] = part;
    return { ...a, parts };
  };
  const withOptions = (extra: Record<string, unknown>) => (a: Args): Args => ({ ...a, options: { ...a.options, ...extra } });
  const detached = () => {
    const array = new Float32Array(L);
    structuredClone(array.buffer, { transfer: [array.buffer] });
    return array;
  };

  type Case = [string, (a: Args) => Args, typeof TypeError | typeof RangeError, RegExp];
  const cases: Case[] = [
    ['parts undefined', (a) => ({ ...a, parts: undefined }), TypeError, /^parts is undefined, expected a non-empty array of \{ out, lse \} objects$/],
    ['parts an object', (a) => ({ ...a, parts: { out: 1 } }), TypeError, /^parts is an object, expected a non-empty array/],
    ['parts a typed array', (a) => ({ ...a, parts: new Float32Array(3) }), TypeError, /^parts is a Float32Array of length 3, expected a non-empty array/],
    ['parts empty', (a) => ({ ...a, parts: [] }), RangeError, /^parts is an empty array, expected at least one \{ out, lse \} object$/],
    ['a part null', (a) => ({ ...a, parts: [(a.parts as unknown[])[0], null] }), TypeError, /^parts\[1\] is null, expected an object \{ out, lse \}$/],
    ['a part a number', (a) => ({ ...a, parts: [5] }), TypeError, /^parts\[0\] is 5, expected an object \{ out, lse \}$/],
    ['a hole in parts', (a) => ({ ...a, parts: [(a.parts as unknown[])[0], , (a.parts as unknown[])[1]] }), TypeError, /^parts\[1\] is undefined/],
    ['a part without out', dropPartKey(1, 'out'), TypeError, /^parts\[1\]\.out is undefined, expected a Float32Array/],
    ['a part without lse', dropPartKey(1, 'lse'), TypeError, /^parts\[1\]\.lse is undefined, expected a Float32Array$/],
    ['out too short', setPart(1, { out: new Float32Array(N - 1) }), RangeError, /^parts\[1\]\.out has length 23, expected batch·heads·seqLen·headDim = 1·2·3·4 = 24$/],
    ['lse too long', setPart(0, { lse: new Float32Array(L + 1) }), RangeError, /^parts\[0\]\.lse has length 7, expected batch·heads·seqLen = 1·2·3 = 6$/],
    ['out a Float64Array', setPart(1, { out: new Float64Array(N) }), TypeError, /^parts\[1\]\.out is a Float64Array of length 24, expected a Float32Array/],
    ['out a plain array', setPart(0, { out: new Array(N).fill(0) }), TypeError, /^parts\[0\]\.out is an array of length 24, expected a Float32Array/],
    ['lse a Float64Array', setPart(1, { lse: new Float64Array(L) }), TypeError, /^parts\[1\]\.lse is a Float64Array of length 6, expected a Float32Array$/],
    ['a detached lse', setPart(1, { lse: detached() }), TypeError, /^parts\[1\]\.lse is a typed array whose buffer is detached/],
    ['a Uint16Array out without dtype', setPart(0, { out: new Uint16Array(N) }), TypeError, /^options\.dtype is missing, and parts\[0\]\.out is a Uint16Array.*'float16' or 'bfloat16'/],
    ['parts of different kinds', setPart(1, { out: new Uint16Array(N) }), TypeError, /^parts\[1\]\.out is a Uint16Array of length 24, expected a Float32Array/],
    ['Float32Array parts with dtype bfloat16', withOptions({ dtype: 'bfloat16' }), TypeError, /^parts\[0\]\.out is a Float32Array of length 24, expected a Uint16Array of bfloat16 bits \(dtype is bfloat16\)$/],
    ['options undefined', (a) => ({ ...a, options: undefined as unknown as Record<string, unknown> }), TypeError, /^options is undefined, expected an object/],
    ['an unknown option', withOptions({ causal: true }), RangeError, /^options has an unknown key "causal", expected only these keys: batch, heads, seqLen, headDim, layout, dtype, outDtype, out, lse/],
    ['a typo', withOptions({ headdim: 4 }), RangeError, /^options has an unknown key "headdim"/],
    ['batch missing', (a) => ({ ...a, options: { heads: 2, seqLen: 3, headDim: 4 } }), TypeError, /^options\.batch is undefined, expected a positive integer$/],
    ['heads 0', withOptions({ heads: 0 }), RangeError, /^options\.heads is 0, expected a positive safe integer$/],
    ['seqLen fractional', withOptions({ seqLen: 1.5 }), RangeError, /^options\.seqLen is 1\.5/],
    ['headDim a string', withOptions({ headDim: '4' }), TypeError, /^options\.headDim is "4", expected a positive integer$/],
    ['an unknown layout', withOptions({ layout: 'bsdh' }), RangeError, /^options\.layout is "bsdh", expected 'bhsd' or 'bshd'$/],
    ['an unknown dtype', withOptions({ dtype: 'float64' }), RangeError, /^options\.dtype is "float64", expected 'float32', 'float16' or 'bfloat16'$/],
    ['an unknown outDtype', withOptions({ outDtype: 8 }), TypeError, /^options\.outDtype is 8, expected 'float32', 'float16' or 'bfloat16'$/],
    ['options.out of the wrong kind', withOptions({ out: new Uint16Array(N) }), TypeError, /^options\.out is a Uint16Array of length 24, expected a Float32Array$/],
    ['options.out a Float32Array for outDtype bfloat16', withOptions({ outDtype: 'bfloat16', out: new Float32Array(N) }), TypeError, /^options\.out is a Float32Array.*expected a Uint16Array of bfloat16 bits \(outDtype is bfloat16\)$/],
    ['options.out of the wrong length', withOptions({ out: new Float32Array(N + 1) }), RangeError, /^options\.out has length 25, expected batch·heads·seqLen·headDim = 1·2·3·4 = 24$/],
    ['options.lse of the wrong kind', withOptions({ lse: new Float64Array(L) }), TypeError, /^options\.lse is a Float64Array of length 6, expected a Float32Array$/],
    ['options.lse of the wrong length', withOptions({ lse: new Float32Array(L - 1) }), RangeError, /^options\.lse has length 5, expected batch·heads·seqLen = 1·2·3 = 6$/],
    ['options.out is a part\'s out', (a) => withOptions({ out: (a.parts as State[])[1].out })(a), RangeError, /^options\.out overlaps the memory of parts\[1\]\.out, expected an array that shares no memory/],
    ['options.lse overlaps a part\'s lse', (a) => {
      const shared = new Float32Array(L * 2);
      const parts = [(a.parts as State[])[0], { out: (a.parts as State[])[1].out, lse: shared.subarray(0, L) }];
      return { parts, options: { ...a.options, lse: shared.subarray(L - 1, 2 * L - 1) } };
    }, RangeError, /^options\.lse overlaps the memory of parts\[1\]\.lse/],
    ['options.out overlaps a part\'s lse', (a) => {
      const shared = new Float32Array(N + L);
      const parts = [{ out: (a.parts as State[])[0].out, lse: shared.subarray(N - 2, N - 2 + L) }, (a.parts as State[])[1]];
      return { parts, options: { ...a.options, out: shared.subarray(0, N), lse: undefined } };
    }, RangeError, /^options\.out overlaps the memory of parts\[0\]\.lse/],
    ['options.out overlaps options.lse', (a) => {
      const shared = new Float32Array(N + 1);
      return { ...a, options: { ...a.options, out: shared.subarray(0, N), lse: shared.subarray(N - 5, N + 1) } };
    }, RangeError, /^options\.out overlaps the memory of options\.lse/],
  ];

  it.each(cases)('%s', async (_name, make, ErrorClass, message) => {
    for (const mode of MODES) {
      const a = make(valid());
      // Where the case does not give its own, a valid out and lse: they must come out untouched.
      const options: Record<string, unknown> | undefined = a.options === undefined ? undefined : { ...a.options };
      if (options !== undefined) {
        if (!('out' in options) && !('outDtype' in options) && !('dtype' in options)) options.out = new Float32Array(N).fill(9);
        if (!('lse' in options)) options.lse = new Float32Array(L).fill(9);
      }
      const targets = [options?.out, options?.lse].filter((x): x is Float32Array => x instanceof Float32Array);
      const snapshots = targets.map((x) => x.slice());
      const caseOptions = options;
      let error: unknown;
      if (mode === 'sync') {
        try {
          gla.mergeAttentionStatesSync(a.parts as State[], caseOptions as never);
        } catch (e) {
          error = e;
        }
      } else {
        let pending: Promise<unknown> | undefined;
        expect(() => {
          pending = gla.mergeAttentionStates(a.parts as State[], caseOptions as never);
        }).not.toThrow();
        error = await (pending as Promise<unknown>).then(() => undefined, (e: unknown) => e);
      }
      expect(error, `${mode}: no error`).toBeInstanceOf(ErrorClass);
      expect((error as Error).constructor, mode).toBe(ErrorClass);
      expect((error as Error).message, mode).toMatch(message);
      targets.forEach((x, i) => {
        if (x.length > 0 && !(a.parts as State[] | undefined)?.some?.((p) => p?.out === x || p?.lse === x)) {
          expect(Array.from(x), `${mode}: an output was written`).toEqual(Array.from(snapshots[i]));
        }
      });
    }
  });
});
