// The specification, executable: dense float64 attention with the visibility rule of
// native/include/gla/problem.h written out pair by pair. It reads the caller's raw options and
// shares no code with lib/, so that a bug in the package's normalisation cannot hide here too.

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
}

export interface ReferenceResult {
  /** Laid out like q (options.layout). */
  out: Float64Array;
  /** [batch, heads, seqLen]. */
  lse: Float64Array;
  /** The largest |scaled score| over visible pairs, to show a test really has large logits. */
  maxAbsScore: number;
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

  // Straight from problem.h: key j is visible to the query at position p when all of these hold.
  const visible = (b: number, p: number, j: number): boolean => {
    const kvLength = options.kvLengths === undefined ? kvSeqLen : options.kvLengths[b];
    if (!(j < kvLength)) return false;
    if (causal && !(j <= p)) return false;
    const inWindow = (left === -1 || p - left <= j) && (right === -1 || j <= p + right);
    return inWindow || globals[b].has(j) || globals[b].has(p);
  };

  const out = new Float64Array(batch * heads * seqLen * headDim);
  const lse = new Float64Array(batch * heads * seqLen);
  const scores = new Float64Array(kvSeqLen);
  let maxAbsScore = 0;
  for (let b = 0; b < batch; b++) {
    for (let h = 0; h < heads; h++) {
      const kvh = Math.floor(h / (heads / kvHeads));
      for (let i = 0; i < seqLen; i++) {
        const p = i + kvSeqLen - seqLen;
        let max = -Infinity;
        for (let j = 0; j < kvSeqLen; j++) {
          scores[j] = -Infinity;
          if (!visible(b, p, j)) continue;
          let dot = 0;
          for (let d = 0; d < headDim; d++) {
            dot += q[tensorIndex(layout, heads, seqLen, headDim, b, h, i, d)] *
              k[tensorIndex(layout, kvHeads, kvSeqLen, headDim, b, kvh, j, d)];
          }
          scores[j] = scale * dot;
          max = Math.max(max, scores[j]);
          maxAbsScore = Math.max(maxAbsScore, Math.abs(scores[j]));
        }
        const row = (b * heads + h) * seqLen + i;
        if (max === -Infinity) {
          lse[row] = -Infinity; // sees no key: zeros (out is already zero) and -Infinity
          continue;
        }
        let sum = 0;
        for (let j = 0; j < kvSeqLen; j++) {
          if (scores[j] === -Infinity) continue;
          const w = Math.exp(scores[j] - max);
          sum += w;
          for (let d = 0; d < headDim; d++) {
            out[tensorIndex(layout, heads, seqLen, headDim, b, h, i, d)] +=
              w * v[tensorIndex(layout, kvHeads, kvSeqLen, headDim, b, kvh, j, d)];
          }
        }
        for (let d = 0; d < headDim; d++) out[tensorIndex(layout, heads, seqLen, headDim, b, h, i, d)] /= sum;
        lse[row] = max + Math.log(sum);
      }
    }
  }
  return { out, lse, maxAbsScore };
}
