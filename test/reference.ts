// The specification, executable: dense float64 attention with the visibility rule of
// native/include/gla/problem.h written out pair by pair, and the serving options of
// notes/serving-spec.md (qLengths, softcap, alibiSlopes, sinkLogits) written out score by score. It
// reads the caller's raw options and shares no code with lib/, so that a bug in the package's
// normalisation cannot hide here too.
//
// Per batch item b, with kvLength(b) = kvLengths[b] (else kvSeqLen) and qLength(b) = qLengths[b]
// (else seqLen):
//   - query row i sits at absolute key position p = i + kvLength(b) − qLength(b) (per sequence:
//     each item's queries end where its own keys end);
//   - rows i ≥ qLength(b) are padding: out 0, lse −Infinity, whatever the sinks;
//   - the score of a visible pair (query head h, key j) is s = scale·(q·k), then
//     s = softcap·tanh(s / softcap) when softcap > 0, then s = s − slope[h]·|p − j| with ALiBi;
//   - with sinkLogits, sink[h] joins every real row's softmax denominator with no value vector:
//     m = max(max_j s_j, sink), D = Σ exp(s_j − m) + exp(sink − m), out = Σ exp(s_j − m)·v_j / D,
//     lse = m + log D; a row that sees no key gets out 0 and lse = sink.

export interface ReferenceOptions {
  batch: number;
  heads: number;
  seqLen: number;
  headDim: number;
  kvHeads?: number;
  kvSeqLen?: number;
  layout?: 'bhsd' | 'bshd';
  scale?: number;
  causal?: boolean;
  kvLengths?: ArrayLike<number>;
  window?: number | readonly [number, number];
  globalTokens?: ArrayLike<number> | readonly ArrayLike<number>[];
  /** Real query rows per batch item, each in [0, seqLen]; the rest are padding. */
  qLengths?: ArrayLike<number>;
  /** 0 or absent: off; > 0: s ← softcap·tanh(s / softcap). */
  softcap?: number;
  /** One ALiBi slope per query head: s ← s − slope·|p − j|. */
  alibiSlopes?: ArrayLike<number>;
  /** One sink logit per query head, in every row's denominator. */
  sinkLogits?: ArrayLike<number>;
}

export interface ReferenceResult {
  /** Laid out like q (options.layout). */
  out: Float64Array;
  /** [batch, heads, seqLen]. */
  lse: Float64Array;
  /** The largest |scale·q·k| over visible pairs (before softcap and ALiBi), to show a test really
   *  has large logits. */
  maxAbsScore: number;
  /**
   * [batch, heads, seqLen]: 1 for a row whose out must be exact zeros: a padding row (i ≥ qLength),
   * or a row that sees no key (none visible, or every visible score −Infinity). Its lse is
   * −Infinity, or the head's sink logit with sinkLogits (padding rows: −Infinity always).
   */
  empty: Uint8Array;
}

/** Element index of (b, h, s, d) in a tensor of `heads` heads and `seqLen` positions. */
export function tensorIndex(
  layout: 'bhsd' | 'bshd', heads: number, seqLen: number, headDim: number,
  b: number, h: number, s: number, d: number,
): number {
  return layout === 'bhsd'
    ? ((b * heads + h) * seqLen + s) * headDim + d
    : ((b * seqLen + s) * heads + h) * headDim + d;
}

/** The global tokens of each batch item as sets. */
function globalSets(options: ReferenceOptions): Set<number>[] {
  const g = options.globalTokens;
  const sets: Set<number>[] = [];
  for (let b = 0; b < options.batch; b++) {
    if (g === undefined) sets.push(new Set());
    else if (g.length > 0 && typeof g[0] !== 'number') sets.push(new Set(Array.from(g[b] as ArrayLike<number>)));
    else sets.push(new Set(Array.from(g as ArrayLike<number>)));
  }
  return sets;
}

export function referenceAttention(
  q: Float32Array, k: Float32Array, v: Float32Array, options: ReferenceOptions,
): ReferenceResult {
  const { batch, heads, seqLen, headDim } = options;
  const kvHeads = options.kvHeads ?? heads;
  const kvSeqLen = options.kvSeqLen ?? seqLen;
  const layout = options.layout ?? 'bhsd';
  const scale = options.scale ?? 1 / Math.sqrt(headDim);
  const causal = options.causal ?? false;
  let left = -1;
  let right = -1;
  if (typeof options.window === 'number') {
    left = Math.floor(options.window / 2);
    right = Math.floor(options.window / 2);
  } else if (options.window !== undefined) {
    [left, right] = options.window;
  }
  const globals = globalSets(options);
  const kvLengthOf = (b: number): number => (options.kvLengths === undefined ? kvSeqLen : options.kvLengths[b]);
  const qLengthOf = (b: number): number => (options.qLengths === undefined ? seqLen : options.qLengths[b]);
  const softcap = options.softcap ?? 0;
  const slopes = options.alibiSlopes;
  const sinks = options.sinkLogits;

  // Straight from problem.h: key j is visible to the query at position p when all of these hold.
  const visible = (b: number, p: number, j: number): boolean => {
    if (!(j < kvLengthOf(b))) return false;
    if (causal && !(j <= p)) return false;
    const inWindow = (left === -1 || p - left <= j) && (right === -1 || j <= p + right);
    return inWindow || globals[b].has(j) || globals[b].has(p);
  };

  const out = new Float64Array(batch * heads * seqLen * headDim);
  const lse = new Float64Array(batch * heads * seqLen);
  const empty = new Uint8Array(batch * heads * seqLen);
  const scores = new Float64Array(kvSeqLen);
  const seen = new Uint8Array(kvSeqLen);
  let maxAbsScore = 0;
  for (let b = 0; b < batch; b++) {
    const qLength = qLengthOf(b);
    for (let h = 0; h < heads; h++) {
      const kvh = Math.floor(h / (heads / kvHeads));
      for (let i = 0; i < seqLen; i++) {
        const row = (b * heads + h) * seqLen + i;
        if (i >= qLength) {
          // Padding: zeros (out is already zero) and -Infinity, with or without sinks.
          lse[row] = -Infinity;
          empty[row] = 1;
          continue;
        }
        const p = i + kvLengthOf(b) - qLength;
        let max = -Infinity;
        for (let j = 0; j < kvSeqLen; j++) {
          seen[j] = 0;
          if (!visible(b, p, j)) continue;
          seen[j] = 1;
          let dot = 0;
          for (let d = 0; d < headDim; d++) {
            dot += q[tensorIndex(layout, heads, seqLen, headDim, b, h, i, d)] *
              k[tensorIndex(layout, kvHeads, kvSeqLen, headDim, b, kvh, j, d)];
          }
          let score = scale * dot;
          maxAbsScore = Math.max(maxAbsScore, Math.abs(score));
          if (softcap > 0) score = softcap * Math.tanh(score / softcap);
          if (slopes !== undefined) score -= slopes[h] * Math.abs(p - j);
          scores[j] = score;
          max = Math.max(max, score); // NaN stays NaN: the row becomes NaN below
        }
        const sink = sinks === undefined ? -Infinity : sinks[h];
        if (max === -Infinity) {
          // Sees no key (or only -Infinity scores, which weigh 0): zeros, lse -Infinity or the sink.
          lse[row] = sink;
          empty[row] = 1;
          continue;
        }
        const m = Math.max(max, sink);
        let sum = 0;
        for (let j = 0; j < kvSeqLen; j++) {
          if (seen[j] === 0 || scores[j] === -Infinity) continue;
          const w = Math.exp(scores[j] - m);
          sum += w;
          for (let d = 0; d < headDim; d++) {
            out[tensorIndex(layout, heads, seqLen, headDim, b, h, i, d)] +=
              w * v[tensorIndex(layout, kvHeads, kvSeqLen, headDim, b, kvh, j, d)];
          }
        }
        if (sinks !== undefined) sum += Math.exp(sink - m);
        for (let d = 0; d < headDim; d++) out[tensorIndex(layout, heads, seqLen, headDim, b, h, i, d)] /= sum;
        lse[row] = m + Math.log(sum);
      }
    }
  }
  return { out, lse, maxAbsScore, empty };
}
