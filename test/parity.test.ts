// Every backend listed by backends() against the float64 reference, on the grid of helpers/cases.ts.
import { performance } from 'node:perf_hooks';
import { describe, expect, it } from 'vitest';
import { attention } from './helpers/call';
import { PARITY_CASES, type ParityCase, inputLengths, makeInputs, pagedCache, prepared } from './helpers/cases';
import { expectMatchesReference, expectSameContents } from './helpers/compare';
import { BACKENDS } from './helpers/package';
import { type ReferenceOptions, referenceAttention } from './reference';

describe.each(BACKENDS)('backend %s matches the float64 reference', (backend) => {
  const table = PARITY_CASES.map((c): [string, ParityCase] => [`${c.kind}: ${c.name}`, c]);
  it.each(table)('%s', async (_title, c) => {
    const { inputs, reference } = prepared(c);
    if (c.magnitude !== undefined) expect(reference.maxAbsScore).toBeGreaterThan(100);
    const copies = { q: inputs.q.slice(), k: inputs.k.slice(), v: inputs.v.slice() };
    const n = inputLengths(c.options);

    // Sync into caller buffers pre-filled with NaN: every element must be written.
    const out = new Float32Array(n.q).fill(NaN);
    const lse = new Float32Array(n.lse).fill(NaN);
    const returned = await attention(c.kind, 'sync', inputs.q, inputs.k, inputs.v, { ...c.options, out, lse, backend });
    expect(returned).toBe(out);
    expectMatchesReference(c.options, reference, out, lse);

    // Async into a buffer the package allocates.
    const asyncLse = new Float32Array(n.lse).fill(NaN);
    const allocated = await attention(c.kind, 'async', inputs.q, inputs.k, inputs.v, { ...c.options, lse: asyncLse, backend });
    expect(allocated).toBeInstanceOf(Float32Array);
    expectMatchesReference(c.options, reference, allocated, asyncLse);

    expectSameContents(inputs.q, copies.q, 'q after the calls');
    expectSameContents(inputs.k, copies.k, 'k after the calls');
    expectSameContents(inputs.v, copies.v, 'v after the calls');
  });

  // The same problems with K and V in a paged KV cache (shuffled pages, NaN in every pool row no
  // sequence owns): the contiguous problem's reference, sync and async.
  const pagedTable = PARITY_CASES.filter((c) => c.pageSize !== undefined).map((c): [string, ParityCase] => [`${c.kind}: ${c.name}, paged by ${c.pageSize}`, c]);
  it.each(pagedTable)('%s', async (_title, c) => {
    const { inputs, reference } = prepared(c);
    const paged = pagedCache(c.name, c.options, inputs.k, inputs.v, c.pageSize as number);
    const n = inputLengths(c.options);
    for (const mode of ['sync', 'async'] as const) {
      const out = new Float32Array(n.q).fill(NaN);
      const lse = new Float32Array(n.lse).fill(NaN);
      await attention(c.kind, mode, inputs.q, paged.k, paged.v, { ...c.options, ...paged.options, out, lse, backend });
      expectMatchesReference(c.options, reference, out, lse);
    }
  });

  it('honours the byteOffset of subarray inputs and writes nothing outside out and lse', async () => {
    const options: ReferenceOptions = {
      batch: 2, heads: 4, kvHeads: 2, seqLen: 37, kvSeqLen: 50, headDim: 17, layout: 'bshd',
      window: [3, 1], globalTokens: [[2, 45], [20]], causal: true,
    };
    const n = inputLengths(options);
    const { q, k, v } = makeInputs('subarray', options);
    const reference = referenceAttention(q, k, v, options);
    const GUARD = 7; // odd, so the views are not 16-byte aligned either
    const SENTINEL = 12345;
    // q, k and v share one buffer; out and lse share another; each view sits between guard cells.
    const inputBuffer = new Float32Array(GUARD * 4 + n.q + 2 * n.kv).fill(SENTINEL);
    const view = (array: Float32Array, at: number): Float32Array => {
      inputBuffer.set(array, at);
      return inputBuffer.subarray(at, at + array.length);
    };
    const qView = view(q, GUARD);
    const kView = view(k, GUARD * 2 + n.q);
    const vView = view(v, GUARD * 3 + n.q + n.kv);
    const inputSnapshot = inputBuffer.slice();

    for (const mode of ['sync', 'async'] as const) {
      const outputBuffer = new Float32Array(GUARD * 3 + n.q + n.lse).fill(SENTINEL);
      const out = outputBuffer.subarray(GUARD, GUARD + n.q).fill(NaN);
      const lse = outputBuffer.subarray(GUARD * 2 + n.q, GUARD * 2 + n.q + n.lse).fill(NaN);
      const returned = await attention('localGlobal', mode, qView, kView, vView, { ...options, out, lse, backend });
      expect(returned).toBe(out);
      expectMatchesReference(options, reference, out, lse);
      const guards = [
        ...outputBuffer.subarray(0, GUARD),
        ...outputBuffer.subarray(GUARD + n.q, GUARD * 2 + n.q),
        ...outputBuffer.subarray(GUARD * 2 + n.q + n.lse),
      ];
      expect(guards.every((x) => x === SENTINEL), `${mode}: a guard cell around out/lse was written`).toBe(true);
    }
    expectSameContents(inputBuffer, inputSnapshot, 'the buffer behind q, k and v');
  });

  it('overwrites every element when out is reused across calls', async () => {
    const first: ReferenceOptions = { batch: 2, heads: 2, seqLen: 37, kvSeqLen: 40, headDim: 9, window: [5, 5] };
    // Same shape, but batch item 0 sees no key: stale values there must become exact zeros.
    const second: ReferenceOptions = { ...first, kvLengths: [0, 11], globalTokens: [[3], [30, 1]] };
    // Then padding rows past qLengths (and item 0's rows, which see nothing but a sink): stale values
    // there must become exact zeros, with lse -Infinity in padding rows and the sink elsewhere.
    const third: ReferenceOptions = { ...second, qLengths: [37, 12], sinkLogits: [0.5, -1], softcap: 8, alibiSlopes: [0.25, 0.5] };
    const n = inputLengths(first);
    const a = makeInputs('reuse-a', first);
    const b = makeInputs('reuse-b', second);
    const out = new Float32Array(n.q).fill(NaN);
    const lse = new Float32Array(n.lse).fill(NaN);
    for (const mode of ['sync', 'async'] as const) {
      await attention('localGlobal', mode, a.q, a.k, a.v, { ...first, out, lse, backend });
      expectMatchesReference(first, referenceAttention(a.q, a.k, a.v, first), out, lse);
      const returned = await attention('localGlobal', mode, b.q, b.k, b.v, { ...second, out, lse, backend });
      expect(returned).toBe(out);
      expectMatchesReference(second, referenceAttention(b.q, b.k, b.v, second), out, lse);
      await attention('localGlobal', mode, a.q, a.k, a.v, { ...first, out, lse, backend });
      await attention('localGlobal', mode, b.q, b.k, b.v, { ...third, out, lse, backend });
      expectMatchesReference(third, referenceAttention(b.q, b.k, b.v, third), out, lse);
    }
  });

  it('treats threads as an upper bound: 1 and more than this machine has give the same result', async () => {
    const options: ReferenceOptions = { batch: 2, heads: 2, seqLen: 100, headDim: 16, window: [9, 3], globalTokens: [0, 70] };
    const { q, k, v } = makeInputs('threads', options);
    const reference = referenceAttention(q, k, v, options);
    for (const threads of [1, 2, 100_000]) {
      for (const mode of ['sync', 'async'] as const) {
        const out = await attention('localGlobal', mode, q, k, v, { ...options, threads, backend });
        expectMatchesReference(options, reference, out, null);
      }
    }
  });

  it('local-global cost grows with seqLen·window, not seqLen²: 32768 tokens, window [8, 8]', async () => {
    // Dense work here would be 68 GFLOP (minutes in JS); the windowed work is about 40 MFLOP.
    const options: ReferenceOptions = { batch: 1, heads: 1, seqLen: 32768, headDim: 16, window: [8, 8], globalTokens: [0] };
    const { q, k, v } = makeInputs('long', options);
    const lse = new Float32Array(options.seqLen);
    const start = performance.now();
    const out = await attention('localGlobal', 'sync', q, k, v, { ...options, lse, backend });
    expect(performance.now() - start).toBeLessThan(10_000);
    expect(out.every(Number.isFinite) && lse.every(Number.isFinite)).toBe(true);
  });

  it('accepts q, k and v that are one and the same array (self-attention)', async () => {
    const options: ReferenceOptions = { batch: 1, heads: 3, seqLen: 37, headDim: 8, causal: true };
    const { q } = makeInputs('same-array', options);
    const reference = referenceAttention(q, q, q, options);
    for (const mode of ['sync', 'async'] as const) {
      const out = await attention('full', mode, q, q, q, { ...options, backend });
      expectMatchesReference(options, reference, out, null);
    }
  });
});
