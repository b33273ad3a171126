// The pure-TypeScript backend: the same blocked algorithm as the native kernels, written to be read.
//
// Work is cut into units of (batch, head, query tile). For each query tile we take the keys its
// window can reach (windowKeyRange), cut them into key tiles, and skip, check per element, or run
// unchecked each tile according to classifyTile. Global keys outside that range are gathered into
// extra tiles; query rows whose own position is global are redone as rows with an unbounded window.
// An online softmax (running max and sum, rescaling the accumulator) means no tile of scores ever
// outlives its key tile, so scratch is a few tiles, never seqLen x kvSeqLen.
//
// The serving options stay out of the common path. Each batch item has its own alignment (query i
// sits at i + kvLength(b) - qLength(b)) and its own count of real rows: a query tile stops at
// qLength(b) and its padding rows are written as zeros without any work. Softcap and ALiBi rewrite
// a tile's scores in one extra pass, taken per tile only when either is on, and attention sinks
// join a row's softmax once, when the row is finished.
//
// Each tile is two small matrix products, S = Q·Kᵀ and O += P·V. The query, key and value rows of a
// tile are first copied into contiguous Float64Array scratch ("packed"), whatever the layout, so the
// two products are plain loops over dense rows: V8 then keeps the accumulators of a 2×4 block in
// registers and loads each packed element once per 8 multiply-adds instead of twice per one.
// Arithmetic is float64 (JS numbers) throughout, so this backend is also a second opinion on the
// fp32 ones.
import type { AttentionProblem, KernelBuffers } from '../problem';
import { type RowMask, TileVisibility, classifyTile, keyAllowed, keyVisible, windowKeyRange } from './visibility';

/** Even: the micro-kernels take query rows in pairs. */
export const QUERY_TILE = 64;
/** A multiple of 4: the score micro-kernel takes keys in fours. */
export const KEY_TILE = 64;

/** How each key of a tile must be checked before it is used. */
const enum KeyCheck {
  /** A fully visible tile: no per-element check. */
  none,
  /** A partly visible tile: the whole rule, globals included. */
  visible,
  /** Gathered global keys: only causality and kvLength can hide them. */
  allowed,
}

/** Units are numbered batch-major, then head, then query tile, so a range of them is one batch at a time. */
export function workUnitCount(problem: AttentionProblem): number {
  return problem.batch * problem.heads * Math.ceil(problem.seqLen / QUERY_TILE);
}

/** Computes units [firstUnit, endUnit) of the problem into buffers.out (and buffers.lse). */
export function runAttention(
  problem: AttentionProblem,
  buffers: KernelBuffers,
  firstUnit = 0,
  endUnit = workUnitCount(problem),
): void {
  const kernel = new TileKernel(problem, buffers, scratchFor(problem.headDim));
  const tiles = Math.ceil(problem.seqLen / QUERY_TILE);
  for (let unit = firstUnit; unit < endUnit; unit++) {
    const tile = unit % tiles;
    const batchHead = (unit - tile) / tiles;
    const head = batchHead % problem.heads;
    const batch = (batchHead - head) / problem.heads;
    const first = tile * QUERY_TILE;
    kernel.attendQueryTile(batch, head, first, Math.min(problem.seqLen, first + QUERY_TILE));
  }
}

/**
 * The tiles of one query tile's work. Packed rows are `stride` elements apart: headDim rounded up
 * to a multiple of 4 with zero padding, so the micro-kernels never need a remainder loop over dims.
 */
class Scratch {
  readonly headDim: number;
  readonly stride: number;
  readonly queries: Float64Array;
  readonly keys: Float64Array;
  readonly values: Float64Array;
  /** Scores of the current tile, QUERY_TILE rows of KEY_TILE, overwritten in place by the weights P. */
  readonly scores: Float64Array;
  /** Per query row: the running output (unnormalised), running max and sum, and this tile's rescale. */
  readonly acc: Float64Array;
  readonly rowMax = new Float64Array(QUERY_TILE);
  readonly rowSum = new Float64Array(QUERY_TILE);
  readonly rowScale = new Float64Array(QUERY_TILE);
  /** 1 for rows of the tile whose position is a global token: they are computed separately. */
  readonly rowIsGlobal = new Uint8Array(QUERY_TILE);
  readonly globalRows = new Int32Array(QUERY_TILE);
  /** The key positions of the current key tile. */
  readonly keyIndex = new Int32Array(KEY_TILE);

  constructor(headDim: number) {
    this.headDim = headDim;
    this.stride = (headDim + 3) & ~3;
    this.queries = new Float64Array(QUERY_TILE * this.stride);
    this.keys = new Float64Array(KEY_TILE * this.stride);
    this.values = new Float64Array(KEY_TILE * this.stride);
    this.scores = new Float64Array(QUERY_TILE * KEY_TILE);
    this.acc = new Float64Array(QUERY_TILE * this.stride);
  }
}

// Sync calls on one thread never overlap (the kernel calls no user code), and each worker has its
// own copy of this module, so one cached scratch per thread is safe. Small calls then allocate
// nothing; a huge headDim is not kept alive after its call. The cache is keyed on headDim, not on
// the stride, because the padding columns must stay zero and another headDim would write them.
const CACHED_STRIDE_LIMIT = 1024;
let cachedScratch: Scratch | undefined;

function scratchFor(headDim: number): Scratch {
  if (cachedScratch !== undefined && cachedScratch.headDim === headDim) return cachedScratch;
  const scratch = new Scratch(headDim);
  if (scratch.stride <= CACHED_STRIDE_LIMIT) cachedScratch = scratch;
  return scratch;
}

class TileKernel {
  private readonly p: AttentionProblem;
  private readonly b: KernelBuffers;
  private readonly s: Scratch;
  private readonly dim: number;
  private readonly qSeq: number;
  private readonly kSeq: number;
  private readonly vSeq: number;
  private readonly outSeq: number;

  // Per batch item.
  private batch = -1;
  /** kvLength(b) - qLength(b): query i of this batch item sits at position i + positionOffset. */
  private positionOffset = 0;
  /** qLength(b): rows at or after it are padding. */
  private queryLength = 0;
  private mask!: RowMask;
  private unboundedMask!: RowMask;
  private globals: Int32Array = new Int32Array(0);
  /** globalMap[j] === 1 when key j is a global token of the current batch item. */
  private readonly globalMap: Uint8Array;

  // Per (batch, head).
  private qHeadBase = 0;
  private kHeadBase = 0;
  private vHeadBase = 0;
  private outHeadBase = 0;
  private lseHeadBase = 0;
  /** ALiBi slope of the current query head; 0 without ALiBi, where the bias vanishes. */
  private slope = 0;
  /** Sink logit of the current query head, used only when the problem has sinks. */
  private sink = 0;

  /** Softcap or ALiBi is on: every tile's scores need transformScores. Fixed for the call. */
  private readonly transformsScores: boolean;

  constructor(problem: AttentionProblem, buffers: KernelBuffers, scratch: Scratch) {
    this.p = problem;
    this.b = buffers;
    this.s = scratch;
    this.dim = problem.headDim;
    this.qSeq = problem.qStrides.seq;
    this.kSeq = problem.kStrides.seq;
    this.vSeq = problem.vStrides.seq;
    this.outSeq = problem.outStrides.seq;
    this.globalMap = new Uint8Array(problem.globalIndices === null ? 0 : problem.kvSeqLen);
    this.transformsScores = problem.softcap > 0 || problem.alibiSlopes !== null;
  }

  attendQueryTile(batch: number, head: number, first: number, end: number): void {
    if (batch !== this.batch) this.selectBatch(batch);
    const p = this.p;
    const s = this.s;
    const kvHead = Math.floor(head / (p.heads / p.kvHeads));
    // Packed sequences: item b's rows start at qStarts[b] (q, out) and kvStarts[b] (k, v), and its
    // lse at qStarts[b] of the head's [heads, totalQ] row.
    const qStart = p.qStarts === null ? 0 : p.qStarts[batch];
    const kvStart = p.kvStarts === null ? 0 : p.kvStarts[batch];
    this.qHeadBase = batch * p.qStrides.batch + head * p.qStrides.head + qStart * p.qStrides.seq;
    this.kHeadBase = batch * p.kStrides.batch + kvHead * p.kStrides.head + kvStart * p.kStrides.seq;
    this.vHeadBase = batch * p.vStrides.batch + kvHead * p.vStrides.head + kvStart * p.vStrides.seq;
    this.outHeadBase = batch * p.outStrides.batch + head * p.outStrides.head + qStart * p.outStrides.seq;
    this.lseHeadBase = p.qStarts === null ? (batch * p.heads + head) * p.seqLen : head * p.qStarts[p.batch] + qStart;
    this.slope = p.alibiSlopes === null ? 0 : p.alibiSlopes[head];
    this.sink = p.sinkLogits === null ? 0 : p.sinkLogits[head];

    // Padding rows cost no work: the tile's real rows end at qLength(b). Packed sequences have no
    // padding rows (the rows past qLength(b) are the next sequence's).
    const realEnd = Math.max(first, Math.min(end, this.queryLength));
    if (realEnd < end && p.qStarts === null) this.writePaddingRows(realEnd, end);
    if (realEnd === first) return;

    let globalRowCount = 0;
    for (let i = first; i < realEnd; i++) {
      const isGlobal = this.isGlobalPosition(i + this.positionOffset);
      s.rowIsGlobal[i - first] = isGlobal ? 1 : 0;
      if (isGlobal) s.globalRows[globalRowCount++] = i;
    }

    this.attendRows(this.mask, first, realEnd, true);
    if (globalRowCount === 0) return;
    // A global query sees every key: its own single-row pass with the window lifted. Globals need no
    // gathering there because the window range already holds every allowed key.
    s.rowIsGlobal.fill(0);
    for (let g = 0; g < globalRowCount; g++) {
      const i = s.globalRows[g];
      this.attendRows(this.unboundedMask, i, i + 1, false);
    }
  }

  private selectBatch(batch: number): void {
    const p = this.p;
    this.batch = batch;
    const kvLength = p.kvLengths === null ? p.kvSeqLen : p.kvLengths[batch];
    this.queryLength = p.qLengths === null ? p.seqLen : p.qLengths[batch];
    // Each sequence's real queries are aligned to the end of its own keys (bottom-right, per item).
    this.positionOffset = kvLength - this.queryLength;
    this.mask = makeMask(kvLength, this.positionOffset, p.causal, p.windowLeft, p.windowRight);
    this.unboundedMask = makeMask(kvLength, this.positionOffset, p.causal, -1, -1);
    if (p.globalOffsets === null || p.globalIndices === null) return;
    for (const j of this.globals) this.globalMap[j] = 0;
    this.globals = p.globalIndices.subarray(p.globalOffsets[batch], p.globalOffsets[batch + 1]);
    for (const j of this.globals) this.globalMap[j] = 1;
  }

  /** Rows [first, end) are padding (at or after qLength(b)): zeros and lse -Infinity. */
  private writePaddingRows(first: number, end: number): void {
    const { out, lse } = this.b;
    const dim = this.dim;
    for (let i = first; i < end; i++) {
      const outBase = this.outHeadBase + i * this.outSeq;
      out.fill(0, outBase, outBase + dim);
    }
    if (lse !== null) lse.fill(-Infinity, this.lseHeadBase + first, this.lseHeadBase + end);
  }

  private isGlobalPosition(position: number): boolean {
    return position >= 0 && position < this.globalMap.length && this.globalMap[position] === 1;
  }

  /** Rows [first, end) under one mask; withGlobals adds the gathered global keys outside the window. */
  private attendRows(mask: RowMask, first: number, end: number, withGlobals: boolean): void {
    const s = this.s;
    const rows = end - first;
    s.rowMax.fill(-Infinity, 0, rows);
    s.rowSum.fill(0, 0, rows);
    s.acc.fill(0, 0, (rows + 1) * s.stride);
    this.packQueries(first, end);
    const pFirst = first + this.positionOffset;
    const pLast = end - 1 + this.positionOffset;

    const range = windowKeyRange(mask, pFirst, pLast);
    for (let jBegin = range.begin; jBegin < range.end; jBegin += KEY_TILE) {
      const jEnd = Math.min(jBegin + KEY_TILE, range.end);
      const visibility = classifyTile(mask, pFirst, pLast, jBegin, jEnd);
      if (visibility === TileVisibility.none) continue;
      for (let c = 0; c < jEnd - jBegin; c++) s.keyIndex[c] = jBegin + c;
      const check = visibility === TileVisibility.full ? KeyCheck.none : KeyCheck.visible;
      this.accumulate(mask, first, end, jEnd - jBegin, check);
    }

    if (withGlobals && this.globals.length > 0) {
      // Globals are sorted: those before the range are a prefix, those after it a suffix.
      const before = lowerBound(this.globals, range.begin);
      const after = lowerBound(this.globals, range.end);
      this.accumulateGathered(mask, first, end, 0, before);
      this.accumulateGathered(mask, first, end, after, this.globals.length);
    }
    this.finishRows(first, end);
  }

  private accumulateGathered(mask: RowMask, first: number, end: number, from: number, to: number): void {
    const keyIndex = this.s.keyIndex;
    for (let g = from; g < to; g += KEY_TILE) {
      const count = Math.min(KEY_TILE, to - g);
      for (let c = 0; c < count; c++) keyIndex[c] = this.globals[g + c];
      this.accumulate(mask, first, end, count, KeyCheck.allowed);
    }
  }

  /** Copies query rows [first, end) into the packed query tile. */
  private packQueries(first: number, end: number): void {
    const { q } = this.b;
    const { queries, stride } = this.s;
    const dim = this.dim;
    for (let i = first; i < end; i++) {
      const src = this.qHeadBase + i * this.qSeq;
      const dst = (i - first) * stride;
      for (let d = 0; d < dim; d++) queries[dst + d] = q[src + d];
    }
  }

  /**
   * Copies the key and value rows named by keyIndex[0 .. keyCount) into the packed tiles, and zeroes
   * the rows up to the next multiple of 4, which the score micro-kernel computes and discards (a
   * stale value row of Infinity there would otherwise turn 0 · Infinity into NaN).
   */
  private packKeysAndValues(keyCount: number): void {
    const { k, v } = this.b;
    const { keys, values, keyIndex, stride } = this.s;
    const dim = this.dim;
    const table = this.p.blockTable;
    const pageSize = this.p.pageSize;
    const tableBase = this.batch * this.p.maxBlocks;
    for (let c = 0; c < keyCount; c++) {
      const j = keyIndex[c];
      // A paged cache: key j is row j mod pageSize of the item's page ⌊j / pageSize⌋ in the pool.
      const row = table === null ? j : table[tableBase + Math.floor(j / pageSize)] * pageSize + (j % pageSize);
      const kSrc = this.kHeadBase + row * this.kSeq;
      const vSrc = this.vHeadBase + row * this.vSeq;
      const dst = c * stride;
      for (let d = 0; d < dim; d++) {
        keys[dst + d] = k[kSrc + d];
        values[dst + d] = v[vSrc + d];
      }
    }
    const padded = (keyCount + 3) & ~3;
    keys.fill(0, keyCount * stride, padded * stride);
    values.fill(0, keyCount * stride, padded * stride);
  }

  /** One online-softmax step: rows [first, end) against the keys keyIndex[0 .. keyCount). */
  private accumulate(mask: RowMask, first: number, end: number, keyCount: number, check: KeyCheck): void {
    const s = this.s;
    const { scores, rowMax, rowSum, rowScale, rowIsGlobal, keyIndex } = s;
    const globalMap = this.globalMap;
    const rows = end - first;
    // The micro-kernels run on whole row pairs and key quads; the extra row and keys get weight 0.
    const pairedRows = (rows + 1) & ~1;
    const paddedKeys = (keyCount + 3) & ~3;
    this.packKeysAndValues(keyCount);
    this.computeScores(pairedRows, paddedKeys);
    if (this.transformsScores) this.transformScores(first, rows, keyCount);

    for (let r = 0; r < pairedRows; r++) {
      const base = r * KEY_TILE;
      if (r >= rows || rowIsGlobal[r] === 1) {
        scores.fill(0, base, base + paddedKeys);
        rowScale[r] = 1;
        continue;
      }
      if (check !== KeyCheck.none) {
        const position = first + r + this.positionOffset;
        for (let c = 0; c < keyCount; c++) {
          const j = keyIndex[c];
          const hidden = check === KeyCheck.visible
            ? !keyVisible(mask, position, j, globalMap[j] === 1)
            : !keyAllowed(mask, position, j);
          if (hidden) scores[base + c] = -Infinity;
        }
      }
      let tileMax = -Infinity;
      for (let c = 0; c < keyCount; c++) {
        const score = scores[base + c];
        // A NaN score must reach the row (IEEE), so it wins the max once seen and keeps it.
        if (score > tileMax || score !== score) tileMax = score;
        if (tileMax !== tileMax) break;
      }
      if (tileMax === -Infinity) {
        // Nothing visible here: the row's state must come out unchanged.
        scores.fill(0, base, base + paddedKeys);
        rowScale[r] = 1;
        continue;
      }

      const newMax = Math.max(rowMax[r], tileMax);
      // exp(-Infinity) = 0 on the row's first visible tile, which clears the (zero) state anyway.
      const rescale = expNonPositive(rowMax[r] - newMax);
      let sum = 0;
      if (check === KeyCheck.none) {
        for (let c = 0; c < keyCount; c++) {
          const weight = expNonPositive(scores[base + c] - newMax);
          scores[base + c] = weight;
          sum += weight;
        }
      } else {
        // exp is the costliest step per key: only visible keys pay for it.
        for (let c = 0; c < keyCount; c++) {
          const score = scores[base + c];
          const weight = score === -Infinity ? 0 : expNonPositive(score - newMax);
          scores[base + c] = weight;
          sum += weight;
        }
      }
      for (let c = keyCount; c < paddedKeys; c++) scores[base + c] = 0;
      rowSum[r] = rowSum[r] * rescale + sum;
      rowMax[r] = newMax;
      rowScale[r] = rescale;
    }
    if (check === KeyCheck.none) this.accumulateValues(pairedRows, paddedKeys);
    else this.accumulateVisibleValues(rows, keyCount);
  }

  /**
   * scores[r][c] = scale · (queries[r] · keys[c]) for r < rows (even), c < keyCount (a multiple of 4).
   * A 2×4 block of dot products at a time: 8 independent sums from 6 loads per step over d.
   */
  private computeScores(rows: number, keyCount: number): void {
    const { queries, keys, scores, stride } = this.s;
    const scale = this.p.scale;
    for (let r = 0; r < rows; r += 2) {
      const q0 = r * stride;
      const q1 = q0 + stride;
      const out0 = r * KEY_TILE;
      const out1 = out0 + KEY_TILE;
      for (let c = 0; c < keyCount; c += 4) {
        const k0 = c * stride;
        const k1 = k0 + stride;
        const k2 = k1 + stride;
        const k3 = k2 + stride;
        let s00 = 0, s01 = 0, s02 = 0, s03 = 0;
        let s10 = 0, s11 = 0, s12 = 0, s13 = 0;
        for (let d = 0; d < stride; d++) {
          const a0 = queries[q0 + d];
          const a1 = queries[q1 + d];
          const b0 = keys[k0 + d];
          const b1 = keys[k1 + d];
          const b2 = keys[k2 + d];
          const b3 = keys[k3 + d];
          s00 += a0 * b0; s01 += a0 * b1; s02 += a0 * b2; s03 += a0 * b3;
          s10 += a1 * b0; s11 += a1 * b1; s12 += a1 * b2; s13 += a1 * b3;
        }
        scores[out0 + c] = s00 * scale; scores[out0 + c + 1] = s01 * scale;
        scores[out0 + c + 2] = s02 * scale; scores[out0 + c + 3] = s03 * scale;
        scores[out1 + c] = s10 * scale; scores[out1 + c + 1] = s11 * scale;
        scores[out1 + c + 2] = s12 * scale; scores[out1 + c + 3] = s13 * scale;
      }
    }
  }

  /**
   * Softcap, then the ALiBi bias (FlashAttention 2's order), on the scores of rows [first, first +
   * rows) against keyIndex[0 .. keyCount). Hidden pairs are transformed too and then masked to
   * -Infinity as usual: masking first would lose a genuine -Infinity score, which softcap maps to
   * -softcap. Global rows are skipped, as accumulate discards their scores.
   */
  private transformScores(first: number, rows: number, keyCount: number): void {
    const { scores, keyIndex, rowIsGlobal } = this.s;
    const softcap = this.p.softcap;
    const slope = this.slope;
    for (let r = 0; r < rows; r++) {
      if (rowIsGlobal[r] === 1) continue;
      const base = r * KEY_TILE;
      if (softcap > 0) {
        for (let c = 0; c < keyCount; c++) scores[base + c] = softcap * Math.tanh(scores[base + c] / softcap);
      }
      if (slope !== 0) {
        const position = first + r + this.positionOffset;
        for (let c = 0; c < keyCount; c++) scores[base + c] -= slope * Math.abs(position - keyIndex[c]);
      }
    }
  }

  /**
   * acc[r] = acc[r] · rowScale[r] + Σ_c P[r][c] · values[c] for r < rows (even), c < keyCount.
   * A block of 2 rows × 4 dims stays in registers across the whole key loop.
   */
  private accumulateValues(rows: number, keyCount: number): void {
    const { values, scores: weights, acc, rowScale, stride } = this.s;
    for (let r = 0; r < rows; r += 2) {
      const w0 = r * KEY_TILE;
      const w1 = w0 + KEY_TILE;
      const a0 = r * stride;
      const a1 = a0 + stride;
      const f0 = rowScale[r];
      const f1 = rowScale[r + 1];
      for (let d = 0; d < stride; d += 4) {
        let o00 = acc[a0 + d] * f0, o01 = acc[a0 + d + 1] * f0, o02 = acc[a0 + d + 2] * f0, o03 = acc[a0 + d + 3] * f0;
        let o10 = acc[a1 + d] * f1, o11 = acc[a1 + d + 1] * f1, o12 = acc[a1 + d + 2] * f1, o13 = acc[a1 + d + 3] * f1;
        for (let c = 0, v = d; c < keyCount; c++, v += stride) {
          const p0 = weights[w0 + c];
          const p1 = weights[w1 + c];
          const y0 = values[v];
          const y1 = values[v + 1];
          const y2 = values[v + 2];
          const y3 = values[v + 3];
          o00 += p0 * y0; o01 += p0 * y1; o02 += p0 * y2; o03 += p0 * y3;
          o10 += p1 * y0; o11 += p1 * y1; o12 += p1 * y2; o13 += p1 * y3;
        }
        acc[a0 + d] = o00; acc[a0 + d + 1] = o01; acc[a0 + d + 2] = o02; acc[a0 + d + 3] = o03;
        acc[a1 + d] = o10; acc[a1 + d + 1] = o11; acc[a1 + d + 2] = o12; acc[a1 + d + 3] = o13;
      }
    }
  }

  /**
   * accumulateValues for tiles with hidden keys, which have weight 0: they are skipped, not
   * multiplied, so that a NaN or Infinity in a hidden key's value row stays out of rows that do not
   * see it (0 · Infinity is NaN). One row × 4 dims at a time; these tiles are the few at mask edges.
   */
  private accumulateVisibleValues(rows: number, keyCount: number): void {
    const { values, scores: weights, acc, rowScale, stride } = this.s;
    for (let r = 0; r < rows; r++) {
      const w0 = r * KEY_TILE;
      const a0 = r * stride;
      const f0 = rowScale[r];
      for (let d = 0; d < stride; d += 4) {
        let o0 = acc[a0 + d] * f0, o1 = acc[a0 + d + 1] * f0, o2 = acc[a0 + d + 2] * f0, o3 = acc[a0 + d + 3] * f0;
        for (let c = 0, v = d; c < keyCount; c++, v += stride) {
          const p = weights[w0 + c];
          if (p === 0) continue;
          o0 += p * values[v]; o1 += p * values[v + 1]; o2 += p * values[v + 2]; o3 += p * values[v + 3];
        }
        acc[a0 + d] = o0; acc[a0 + d + 1] = o1; acc[a0 + d + 2] = o2; acc[a0 + d + 3] = o3;
      }
    }
  }

  /**
   * Normalises rows [first, end) into out and lse; a row that saw nothing (sum 0) gets zeros and
   * -Infinity, a row whose sum is NaN (a NaN or +Infinity score) gets NaN, as IEEE arithmetic would.
   */
  private finishRows(first: number, end: number): void {
    if (this.p.sinkLogits !== null) {
      this.finishRowsWithSink(first, end);
      return;
    }
    const { out, lse } = this.b;
    const { acc, rowSum, rowMax, rowIsGlobal, stride } = this.s;
    const dim = this.dim;
    for (let i = first; i < end; i++) {
      const r = i - first;
      if (rowIsGlobal[r] === 1) continue;
      const outBase = this.outHeadBase + i * this.outSeq;
      const accBase = r * stride;
      const sum = rowSum[r];
      const inverse = sum > 0 ? 1 / sum : sum === 0 ? 0 : NaN;
      for (let d = 0; d < dim; d++) out[outBase + d] = acc[accBase + d] * inverse;
      if (lse !== null) lse[this.lseHeadBase + i] = sum > 0 ? rowMax[r] + Math.log(sum) : sum === 0 ? -Infinity : NaN;
    }
  }

  /**
   * finishRows with the head's sink logit in every row's softmax: a key with no value vector. The
   * running state needs no change for it; it joins once here, under the larger of the two maxima:
   * sum' = sum · exp(max - M) + exp(sink - M) with M = max(max, sink). A row that saw nothing has
   * max -Infinity and sum 0, so it gets zeros and lse = sink; a NaN max or sum still gives NaN.
   */
  private finishRowsWithSink(first: number, end: number): void {
    const { out, lse } = this.b;
    const { acc, rowSum, rowMax, rowIsGlobal, stride } = this.s;
    const dim = this.dim;
    const sink = this.sink;
    for (let i = first; i < end; i++) {
      const r = i - first;
      if (rowIsGlobal[r] === 1) continue;
      const outBase = this.outHeadBase + i * this.outSeq;
      const accBase = r * stride;
      const max = rowMax[r];
      const jointMax = Math.max(max, sink);
      // 0 for a row that saw nothing (max -Infinity): its zero acc and sum drop out.
      const keysRescale = Math.exp(max - jointMax);
      const sum = rowSum[r] * keysRescale + Math.exp(sink - jointMax);
      const inverse = keysRescale / sum;
      for (let d = 0; d < dim; d++) out[outBase + d] = acc[accBase + d] * inverse;
      if (lse !== null) lse[this.lseHeadBase + i] = jointMax + Math.log(sum);
    }
  }
}

// exp(x) for x <= 0, the only arguments the softmax needs (a score minus its row's max), about 4x
// faster than Math.exp in V8 and within 4e-13 of it. x = (n + j/64)·ln2 + r with integer n <= 0,
// j in [0, 64) and |r| <= ln2/128, so exp(x) = 2^n · 2^(j/64) · exp(r): two table entries and a
// degree-4 Taylor polynomial (truncation error r⁵/120 < 4e-14).
const EXP_STEPS = 64;
const EXP_STEP = Math.LN2 / EXP_STEPS;
const EXP_STEPS_PER_UNIT = EXP_STEPS / Math.LN2;
const TWO_POW_STEP = Float64Array.from({ length: EXP_STEPS }, (_, j) => 2 ** (j / EXP_STEPS));
/** 2^-n for n in [0, 1022]: every normal power of two at or below 1. */
const TWO_POW_NEGATIVE = Float64Array.from({ length: 1023 }, (_, n) => 2 ** -n);
/** Adding then subtracting 1.5·2^52 rounds a double to the nearest integer (Math.round is slower in V8). */
const ROUNDING_SHIFT = 6755399441055744;
/** exp(-708) is about the smallest normal double: below it (and for -Infinity) the weight is 0. */
const EXP_MIN_ARGUMENT = -708;

function expNonPositive(x: number): number {
  if (x < EXP_MIN_ARGUMENT) return 0;
  const steps = x * EXP_STEPS_PER_UNIT + ROUNDING_SHIFT - ROUNDING_SHIFT;
  const r = x - steps * EXP_STEP;
  const m = steps | 0; // = 64·n + j with j = m & 63 and n = m >> 6, both exact for m >= -65408
  const expR = 1 + r * (1 + r * (1 / 2 + r * (1 / 6 + r * (1 / 24))));
  return TWO_POW_NEGATIVE[-(m >> 6)] * TWO_POW_STEP[m & (EXP_STEPS - 1)] * expR;
}

/** Built in one place so that every RowMask has the same shape (one hidden class for V8). */
function makeMask(kvLength: number, positionOffset: number, causal: boolean, windowLeft: number, windowRight: number): RowMask {
  return { kvLength, positionOffset, windowLeft, windowRight, causal };
}

/** First index of the sorted list whose value is >= target. */
function lowerBound(sorted: Int32Array, target: number): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (sorted[mid] < target) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
