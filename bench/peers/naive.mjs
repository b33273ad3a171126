// The naive attention a user would write first: three loops, one score row at a time, no
// blocking. It is both a peer (what the JS backend must beat) and the bench's reference, since it
// is short enough to check by eye. It visits only visible keys (an interval plus a few globals),
// so it does no per-key mask test that would make it look slower than it need be.
import { maskOf, rowKeys } from '../visibility.mjs';

/** One output row (batch b, head h, query i) into out[outOff .. outOff + d). */
function attendRow(q, k, v, o, m, b, h, i, out, outOff, scores, acc) {
  const d = o.headDim;
  const s = o.seqLen;
  const kvs = o.kvSeqLen ?? s;
  const kvh = o.kvHeads ?? o.heads;
  const hk = Math.floor(h / (o.heads / kvh));
  const qOff = ((b * o.heads + h) * s + i) * d;
  const kvBase = (b * kvh + hk) * kvs;
  const scale = o.scale ?? 1 / Math.sqrt(d);
  const { lo, hi, extra } = rowKeys(m, b, i);
  const keys = hi - lo + extra.length;
  const keyAt = (n) => (n < hi - lo ? lo + n : extra[n - (hi - lo)]);
  // The serving options (lib/types.ts): softcap, then ALiBi's -slope·|p - j|, then a sink logit in
  // the denominator.
  const softcap = o.softcap ?? 0;
  const slope = o.alibiSlopes ? o.alibiSlopes[h] : 0;
  const sink = o.sinkLogits ? o.sinkLogits[h] : -Infinity;
  const p = i + m.offsetOf(b);
  for (let t = 0; t < d; t++) acc[t] = 0;
  if (keys === 0) {
    for (let t = 0; t < d; t++) out[outOff + t] = 0; // fully masked row: 0 by convention
    return;
  }
  let max = sink;
  for (let n = 0; n < keys; n++) {
    const kOff = (kvBase + keyAt(n)) * d;
    let dot = 0;
    for (let t = 0; t < d; t++) dot += q[qOff + t] * k[kOff + t];
    let score = dot * scale;
    if (softcap > 0) score = softcap * Math.tanh(score / softcap);
    score -= slope * Math.abs(p - keyAt(n));
    scores[n] = score;
    if (scores[n] > max) max = scores[n];
  }
  let sum = Math.exp(sink - max);
  for (let n = 0; n < keys; n++) {
    const e = Math.exp(scores[n] - max);
    sum += e;
    const vOff = (kvBase + keyAt(n)) * d;
    for (let t = 0; t < d; t++) acc[t] += e * v[vOff + t];
  }
  for (let t = 0; t < d; t++) out[outOff + t] = acc[t] / sum;
}

/** Full naive attention in bhsd layout; returns a new Float32Array [b, h, s, d]. */
export function naiveAttention(q, k, v, o) {
  const m = maskOf(o);
  const out = new Float32Array(o.batch * o.heads * o.seqLen * o.headDim);
  const scores = new Float64Array(o.kvSeqLen ?? o.seqLen);
  const acc = new Float64Array(o.headDim);
  for (let b = 0; b < o.batch; b++)
    for (let h = 0; h < o.heads; h++)
      for (let i = 0; i < o.seqLen; i++)
        attendRow(q, k, v, o, m, b, h, i, out, ((b * o.heads + h) * o.seqLen + i) * o.headDim, scores, acc);
  return out;
}

/**
 * Rows to check on shapes too large for a full reference: the first and last query of every
 * (batch, head), every global query, and a seeded spread of others. Flat row indices
 * ((b * heads + h) * seqLen + i), sorted and unique.
 */
export function sampleRows(o, count = 48) {
  const rows = new Set();
  const bh = o.batch * o.heads;
  const m = maskOf(o);
  let seed = 12345;
  const rand = () => (seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32;
  for (let x = 0; x < bh; x++) {
    rows.add(x * o.seqLen);
    rows.add(x * o.seqLen + o.seqLen - 1);
  }
  for (let b = 0; b < o.batch; b++)
    for (const g of m.globals(b)) {
      const i = g - m.offsetOf(b);
      if (i >= 0 && i < o.seqLen) rows.add((b * o.heads + Math.floor(rand() * o.heads)) * o.seqLen + i);
    }
  const want = Math.min(rows.size + count, bh * o.seqLen);
  while (rows.size < want) rows.add(Math.floor(rand() * bh * o.seqLen));
  return [...rows].sort((a, b) => a - b);
}

/** The naive reference for selected flat rows only: Float32Array [rows.length, d]. */
export function naiveRows(q, k, v, o, rows) {
  const m = maskOf(o);
  const d = o.headDim;
  const out = new Float32Array(rows.length * d);
  const scores = new Float64Array(o.kvSeqLen ?? o.seqLen);
  const acc = new Float64Array(d);
  rows.forEach((r, n) => {
    const i = r % o.seqLen;
    const bh = (r - i) / o.seqLen;
    const h = bh % o.heads;
    attendRow(q, k, v, o, m, (bh - h) / o.heads, h, i, out, n * d, scores, acc);
  });
  return out;
}

/** Gathers the same rows from a full [b, h, s, d] output, to compare with naiveRows. */
export function pickRows(full, rows, d) {
  const out = new Float32Array(rows.length * d);
  rows.forEach((r, n) => out.set(full.subarray(r * d, r * d + d), n * d));
  return out;
}
