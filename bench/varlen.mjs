// Packed variable-length batches (cuSeqlensQ/K) against the other ways to run the same sequences:
// one call per sequence; the batch padded to the longest sequence with kvLengths only (the padded
// query rows are computed, as in a library without qLengths: the issue's comparison); and padded
// with qLengths = kvLengths too (padding rows cost nothing, so this one should match packed). Causal prefill of 16 sequences whose lengths are drawn (seeded) from
// [64, 2048], bshd rows as a projection writes them; timed as paired rounds on the primary backend.
// The three must agree: the packed output is checked against both before any timing.
import { randomTensor, timeInterleaved } from './measure.mjs';

// Causal prefill (an LLM's prompts) and non-causal encoding (an embedding job's documents). Under
// causal, bottom-right alignment leaves a padded row without real keys when it sits before its
// sequence's start, so padding costs little; without causal every padded row sees every real key.
export const VARLEN_CASES = [
  { id: 'varlen-b16-h8-d64-s64..2048-causal', causal: true, sequences: 16, heads: 8, headDim: 64, minLen: 64, maxLen: 2048 },
  { id: 'varlen-b16-h8-d64-s64..2048', causal: false, sequences: 16, heads: 8, headDim: 64, minLen: 64, maxLen: 2048 },
];

function drawLengths(c, seed) {
  let s = seed;
  const rand = () => (s = (s * 1103515245 + 12345) >>> 0) / 2 ** 32;
  return Array.from({ length: c.sequences }, () => c.minLen + Math.floor(rand() * (c.maxLen - c.minLen + 1)));
}

export async function measureVarlen(api, backend, threads, options = {}) {
  const rows = [];
  for (const c of VARLEN_CASES) {
    const small = { ...c, id: c.id.replace('b16', 'b4').replace('2048', '512'), sequences: 4, maxLen: 512 };
    rows.push(await measureOne(api, backend, threads, options.quick ? small : c, options));
  }
  return rows;
}

async function measureOne(api, backend, threads, c, { quick = false, log = () => {} } = {}) {
  const lengths = drawLengths(c, 2024);
  const row = c.heads * c.headDim;
  const starts = new Int32Array(c.sequences + 1);
  lengths.forEach((n, b) => (starts[b + 1] = starts[b] + n));
  const total = starts[c.sequences];
  const longest = Math.max(...lengths);
  const [q, k, v] = [31, 32, 33].map((seed) => randomTensor(total * row, seed));
  const common = { heads: c.heads, headDim: c.headDim, causal: c.causal, backend, threads };

  // Padded: [sequences, longest, heads, headDim], each sequence's rows at the front of its slot.
  const pad = (x) => {
    const y = new Float32Array(c.sequences * longest * row);
    lengths.forEach((n, b) => y.set(x.subarray(starts[b] * row, starts[b + 1] * row), b * longest * row));
    return y;
  };
  const padded = { q: pad(q), k: pad(k), v: pad(v) };
  const paddedOptions = { ...common, batch: c.sequences, seqLen: longest, layout: 'bshd', kvLengths: lengths };
  const rowsOf = (x, b) => x.subarray(starts[b] * row, starts[b + 1] * row);
  const outs = {
    packed: new Float32Array(total * row),
    separate: new Float32Array(total * row),
    padded: new Float32Array(padded.q.length),
    paddedQ: new Float32Array(padded.q.length),
  };
  const runs = {
    packed: () => api.fullAttentionSync(q, k, v, { ...common, cuSeqlensQ: starts, cuSeqlensK: starts, out: outs.packed }),
    'one call per sequence': () => {
      lengths.forEach((n, b) => api.fullAttentionSync(rowsOf(q, b), rowsOf(k, b), rowsOf(v, b), {
        ...common, batch: 1, seqLen: n, layout: 'bshd', out: rowsOf(outs.separate, b),
      }));
    },
    'padded to the longest': () => api.fullAttentionSync(padded.q, padded.k, padded.v, { ...paddedOptions, out: outs.padded }),
    'padded, with qLengths': () => api.fullAttentionSync(padded.q, padded.k, padded.v, { ...paddedOptions, qLengths: lengths, out: outs.paddedQ }),
  };
  for (const run of Object.values(runs)) run();
  let diff = 0;
  lengths.forEach((n, b) => {
    const p = rowsOf(outs.packed, b);
    const s = rowsOf(outs.separate, b);
    // With kvLengths only, the real rows sit at positions shifted by longest − n (each sequence is
    // aligned to its own end): under causal they are not the packed rows, so only the qLengths run
    // is compared row for row; the kvLengths-only run is timed for its cost.
    const d = outs.paddedQ.subarray(b * longest * row, b * longest * row + n * row);
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
