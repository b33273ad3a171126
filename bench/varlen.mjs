// Packed variable-length batches (cuSeqlensQ/K) against the two ways to run the same sequences
// without them: one call per sequence, and one call on the batch padded to the longest sequence
// (qLengths = kvLengths). Causal prefill of 16 sequences whose lengths are drawn (seeded) from
// [64, 2048], bshd rows as a projection writes them; timed as paired rounds on the primary backend.
// The three must agree: the packed output is checked against both before any timing.
import { randomTensor, timeInterleaved } from './measure.mjs';

export const VARLEN_CASE = { id: 'varlen-b16-h8-d64-s64..2048-causal', sequences: 16, heads: 8, headDim: 64, minLen: 64, maxLen: 2048 };

function drawLengths(c, seed) {
  let s = seed;
  const rand = () => (s = (s * 1103515245 + 12345) >>> 0) / 2 ** 32;
  return Array.from({ length: c.sequences }, () => c.minLen + Math.floor(rand() * (c.maxLen - c.minLen + 1)));
}

export async function measureVarlen(api, backend, threads, { quick = false, log = () => {} } = {}) {
  const c = quick ? { ...VARLEN_CASE, id: 'varlen-b4-h8-d64-s64..512-causal', sequences: 4, maxLen: 512 } : VARLEN_CASE;
  const lengths = drawLengths(c, 2024);
  const row = c.heads * c.headDim;
  const starts = new Int32Array(c.sequences + 1);
  lengths.forEach((n, b) => (starts[b + 1] = starts[b] + n));
  const total = starts[c.sequences];
  const longest = Math.max(...lengths);
  const [q, k, v] = [31, 32, 33].map((seed) => randomTensor(total * row, seed));
  const common = { heads: c.heads, headDim: c.headDim, causal: true, backend, threads };

  // Padded: [sequences, longest, heads, headDim], each sequence's rows at the front of its slot.
  const pad = (x) => {
    const y = new Float32Array(c.sequences * longest * row);
    lengths.forEach((n, b) => y.set(x.subarray(starts[b] * row, starts[b + 1] * row), b * longest * row));
    return y;
  };
  const padded = { q: pad(q), k: pad(k), v: pad(v) };
  const paddedOptions = { ...common, batch: c.sequences, seqLen: longest, layout: 'bshd', kvLengths: lengths, qLengths: lengths };
  const rowsOf = (x, b) => x.subarray(starts[b] * row, starts[b + 1] * row);
  const outs = { packed: new Float32Array(total * row), separate: new Float32Array(total * row), padded: new Float32Array(padded.q.length) };
  const runs = {
    packed: () => api.fullAttentionSync(q, k, v, { ...common, cuSeqlensQ: starts, cuSeqlensK: starts, out: outs.packed }),
    'one call per sequence': () => {
      lengths.forEach((n, b) => api.fullAttentionSync(rowsOf(q, b), rowsOf(k, b), rowsOf(v, b), {
        ...common, batch: 1, seqLen: n, layout: 'bshd', out: rowsOf(outs.separate, b),
      }));
    },
    'padded to the longest': () => api.fullAttentionSync(padded.q, padded.k, padded.v, { ...paddedOptions, out: outs.padded }),
  };
  for (const run of Object.values(runs)) run();
  let diff = 0;
  lengths.forEach((n, b) => {
    const p = rowsOf(outs.packed, b);
    const s = rowsOf(outs.separate, b);
    const d = outs.padded.subarray(b * longest * row, b * longest * row + n * row);
    for (let i = 0; i < p.length; i++) diff = Math.max(diff, Math.abs(p[i] - s[i]), Math.abs(p[i] - d[i]));
  });
  const check = { maxAbsDiff: diff, pass: diff <= 1e-5 };
  if (!check.pass) {
    log(`    ${c.id}: FAILED (packed differs from separate/padded calls by ${diff})`);
    return { case: c.id, backend, lengths, check, times: null };
  }
  const times = await timeInterleaved(runs, quick ? { minRounds: 3, maxRounds: 6, budgetMs: 1500 } : { minRounds: 7, maxRounds: 20, budgetMs: 15000 });
  log(`    ${c.id} (${total} tokens, longest ${longest}): ${Object.entries(times).map(([n, t]) => `${n} ${t.median.toFixed(1)} ms (${t.ratioToFirst.toFixed(2)}x)`).join(', ')}`);
  return { case: c.id, backend, lengths, total, longest, check, times };
}
