// What an async call costs over a sync one, by where its buffers live. A Promise call copies q, k
// and v when they are on plain ArrayBuffers (memory the caller could transfer or shrink while the
// call runs; native/addon/staging.h) and delivers out at settlement, while SharedArrayBuffer-backed
// arrays are used in place. Timed as paired comparisons (sync, async on plain arrays, async on
// shared arrays, rotating), one case at a time, on the primary backend.
import { randomTensor, timeInterleaved } from './measure.mjs';

export const ASYNC_CASES = [
  { id: 'full-h8-d64-s2048', batch: 1, heads: 8, headDim: 64, seqLen: 2048, computeBound: true },
  { id: 'full-h8-d64-s4096', batch: 1, heads: 8, headDim: 64, seqLen: 4096, computeBound: true },
  { id: 'full-h32-d128-s2048', batch: 1, heads: 32, headDim: 128, seqLen: 2048, computeBound: true },
  // Bandwidth-bound: a copy of the cache costs about as much as reading it once, so a decode loop
  // keeps its cache on a SharedArrayBuffer (README, "Async calls and your buffers").
  { id: 'decode-h32-kvh8-d128-s1-kvs32768', batch: 1, heads: 32, kvHeads: 8, headDim: 128, seqLen: 1, kvSeqLen: 32768, computeBound: false },
];

function onShared(array) {
  const shared = new Float32Array(new SharedArrayBuffer(array.byteLength));
  shared.set(array);
  return shared;
}

export async function measureAsyncCost(api, backend, threads, { quick = false, log = () => {} } = {}) {
  const rows = [];
  for (const c of quick ? ASYNC_CASES.filter((x) => x.seqLen <= 2048 && x.heads === 8) : ASYNC_CASES) {
    const kvHeads = c.kvHeads ?? c.heads;
    const kvSeqLen = c.kvSeqLen ?? c.seqLen;
    const qn = c.batch * c.heads * c.seqLen * c.headDim;
    const kvn = c.batch * kvHeads * kvSeqLen * c.headDim;
    const plain = { q: randomTensor(qn, 11), k: randomTensor(kvn, 12), v: randomTensor(kvn, 13) };
    const shared = { q: onShared(plain.q), k: onShared(plain.k), v: onShared(plain.v) };
    const base = { batch: c.batch, heads: c.heads, kvHeads, seqLen: c.seqLen, kvSeqLen, headDim: c.headDim, backend, threads };
    const plainOut = new Float32Array(qn);
    const sharedOut = onShared(plainOut);
    const times = await timeInterleaved(
      {
        sync: () => api.fullAttentionSync(plain.q, plain.k, plain.v, { ...base, out: plainOut }),
        'async, plain arrays (copied)': () => api.fullAttention(plain.q, plain.k, plain.v, { ...base, out: plainOut }),
        'async, SharedArrayBuffer (in place)': () => api.fullAttention(shared.q, shared.k, shared.v, { ...base, out: sharedOut }),
      },
      quick ? { minRounds: 3, maxRounds: 6, budgetMs: 800 } : { minRounds: 7, maxRounds: 40, budgetMs: 5000 },
    );
    const row = { case: c.id, backend, computeBound: c.computeBound, copiedBytes: 4 * (qn + 2 * kvn + qn), times };
    rows.push(row);
    log(`    ${c.id}: ${Object.entries(times).map(([n, t]) => `${n} ${t.median.toFixed(2)} ms (${t.ratioToFirst.toFixed(3)}x)`).join(', ')}`);
  }
  return rows;
}

/**
 * Main-thread cost of submitting async calls: `calls` tiny calls (seqLen 1, headDim 64, options
 * built per call) issued in one synchronous loop, the loop's time per call; median of `loops`
 * loops, each awaited before the next.
 */
export async function measureSubmission(api, backend, { calls = 2000, loops = 7 } = {}) {
  const d = 64;
  const q = randomTensor(d, 21);
  const k = randomTensor(d, 22);
  const v = randomTensor(d, 23);
  const base = { batch: 1, heads: 1, seqLen: 1, headDim: d, backend };
  const loopMs = [];
  for (let loop = 0; loop < loops + 1; loop++) {
    const pending = [];
    const t0 = performance.now();
    for (let i = 0; i < calls; i++) pending.push(api.fullAttention(q, k, v, { ...base, out: new Float32Array(d) }));
    const ms = performance.now() - t0;
    await Promise.all(pending);
    if (loop > 0) loopMs.push(ms); // the first loop warms the JIT
  }
  loopMs.sort((a, b) => a - b);
  const median = loopMs[loopMs.length >> 1];
  return { backend, calls, loopMs: median, perCallUs: (median * 1000) / calls, allLoopsMs: loopMs };
}
