// The package's visibility rule, restated for the bench: the naive peer and the FLOP counts must
// agree with the library on which (query, key) pairs exist, or every GFLOP/s figure is wrong.
//
// Query i of item b sits at position p = i + kvLen(b) - seqLen (the bench passes no qLengths) and
// sees key j iff
//   j < kvLen && (!causal || j <= p) && ((p - left <= j <= p + right) || j global || p global)
// with left/right = -1 meaning unbounded.

/**
 * A window option as [left, right], read exactly as the library reads it (lib/mask-options.ts):
 * [left, right] as given, a number W as [⌊W/2⌋, ⌊W/2⌋] (Longformer's attention_window), none as
 * unbounded. Anything else is a bench bug, and throws.
 */
export function windowBounds(window) {
  if (window === undefined) return [-1, -1];
  if (Array.isArray(window) && window.length === 2 && window.every(Number.isInteger)) return [window[0], window[1]];
  if (Number.isInteger(window) && window >= 0) return [Math.floor(window / 2), Math.floor(window / 2)];
  throw new RangeError(`bench case window ${JSON.stringify(window)}: expected [left, right] or a non-negative integer`);
}

/** Normalises bench case options into the plain numbers the rule needs. */
export function maskOf(o) {
  const [left, right] = windowBounds(o.window);
  const kvSeqLen = o.kvSeqLen ?? o.seqLen;
  const globals = (b) => {
    const g = o.globalTokens;
    if (!g || g.length === 0) return [];
    return Array.isArray(g[0]) ? g[b] : g;
  };
  return {
    causal: !!o.causal,
    left,
    right,
    offsetOf: (b) => (o.kvLengths ? o.kvLengths[b] : kvSeqLen) - o.seqLen,
    kvLen: (b) => (o.kvLengths ? o.kvLengths[b] : kvSeqLen),
    globals: (b) => [...new Set(globals(b))].sort((x, y) => x - y),
  };
}

/** Keys j in [0, allowedEnd) pass the kv-length and causal parts of the rule for position p. */
function allowedEnd(m, kvLen, p) {
  return Math.max(0, Math.min(kvLen, m.causal ? p + 1 : kvLen));
}

/**
 * Exact number of visible (query, key) pairs, in O(batch * seqLen * globals) rather than
 * O(seqLen * kvSeqLen): per row, the window is an interval and the globals are a short list.
 */
export function countVisiblePairs(o) {
  const m = maskOf(o);
  let total = 0;
  for (let b = 0; b < o.batch; b++) {
    const kvLen = m.kvLen(b);
    const g = m.globals(b);
    const gSet = new Set(g);
    let rows = 0;
    for (let i = 0; i < o.seqLen; i++) {
      const p = i + m.offsetOf(b);
      const end = allowedEnd(m, kvLen, p);
      if (gSet.has(p)) {
        rows += end;
        continue;
      }
      const lo = m.left < 0 ? 0 : Math.max(0, p - m.left);
      const hi = m.right < 0 ? end : Math.min(end, p + m.right + 1);
      let n = Math.max(0, hi - lo);
      for (const j of g) if (j < end && (j < lo || j >= hi)) n++;
      rows += n;
    }
    total += rows * o.heads;
  }
  return total;
}

/**
 * The keys visible to one (batch, query) as an interval plus a short list, so that loops over
 * them need no per-key test: keys [lo, hi) and then each key of `extra` (globals outside it).
 */
export function rowKeys(m, b, i) {
  const p = i + m.offsetOf(b);
  const end = allowedEnd(m, m.kvLen(b), p);
  const g = m.globals(b);
  if (g.includes(p)) return { lo: 0, hi: end, extra: [] };
  const lo = m.left < 0 ? 0 : Math.min(end, Math.max(0, p - m.left));
  const hi = m.right < 0 ? end : Math.max(lo, Math.min(end, p + m.right + 1));
  return { lo, hi, extra: g.filter((j) => j < end && (j < lo || j >= hi)) };
}
