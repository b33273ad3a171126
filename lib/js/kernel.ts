// The pure-TypeScript backend: the same blocked algorithm as the native kernels, written to be read.
//
// Work is cut into units of (batch, head, query tile). For each query tile we take the keys its
// window can reach (windowKeyRange), cut them into key tiles, and skip, check per element, or run
// unchecked each tile according to classifyTile. Global keys outside that range are gathered into
// extra tiles; query rows whose own position is global are redone as rows with an unbounded window.
// An online softmax (running max and sum, rescaling the accumulator) means no tile of scores ever
// outlives its key tile, so scratch is a few tiles, never seqLen x kvSeqLen.
//
// Arithmetic is float64 (JS numbers), so this backend is also a second opinion on the fp32 ones.
import type { AttentionProblem } from '../problem';
import type { AttentionBuffers } from '../backends/backend';
import { type RowMask, TileVisibility, classifyTile, keyAllowed, keyVisible, windowKeyRange } from './visibility';

export const QUERY_TILE = 32;
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
  buffers: AttentionBuffers,
  firstUnit = 0,
  endUnit = workUnitCount(problem),
): void {
  const kernel = new TileKernel(problem, buffers);
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

class TileKernel {
  private readonly p: AttentionProblem;
  private readonly b: AttentionBuffers;
  private readonly positionOffset: number;

  // Per query tile: running max, running sum and accumulator of each row (the online softmax).
  private readonly rowMax = new Float64Array(QUERY_TILE);
  private readonly rowSum = new Float64Array(QUERY_TILE);
  private readonly acc: Float64Array;
  /** 1 for rows of the tile whose position is a global token: they are computed separately. */
  private readonly rowIsGlobal = new Uint8Array(QUERY_TILE);
  // Per key tile: the key positions and one row's scores.
  private readonly keys = new Int32Array(KEY_TILE);
  private readonly scores = new Float64Array(KEY_TILE);

  // Per batch item.
  private batch = -1;
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

  constructor(problem: AttentionProblem, buffers: AttentionBuffers) {
    this.p = problem;
    this.b = buffers;
    this.positionOffset = problem.kvSeqLen - problem.seqLen;
    this.acc = new Float64Array(QUERY_TILE * problem.headDim);
    this.globalMap = new Uint8Array(problem.globalIndices === null ? 0 : problem.kvSeqLen);
  }

  attendQueryTile(batch: number, head: number, first: number, end: number): void {
    if (batch !== this.batch) this.selectBatch(batch);
    const p = this.p;
    const kvHead = Math.floor(head / (p.heads / p.kvHeads));
    this.qHeadBase = batch * p.qStrides.batch + head * p.qStrides.head;
    this.kHeadBase = batch * p.kStrides.batch + kvHead * p.kStrides.head;
    this.vHeadBase = batch * p.vStrides.batch + kvHead * p.vStrides.head;
    this.outHeadBase = batch * p.outStrides.batch + head * p.outStrides.head;
    this.lseHeadBase = (batch * p.heads + head) * p.seqLen;

    const globalRows: number[] = [];
    for (let i = first; i < end; i++) {
      const isGlobal = this.isGlobalPosition(i + this.positionOffset);
      this.rowIsGlobal[i - first] = isGlobal ? 1 : 0;
      if (isGlobal) globalRows.push(i);
    }

    this.attendRows(this.mask, first, end, true);
    if (globalRows.length === 0) return;
    // A global query sees every key: its own single-row pass with the window lifted. Globals need no
    // gathering there because the window range already holds every allowed key.
    this.rowIsGlobal.fill(0);
    for (const i of globalRows) this.attendRows(this.unboundedMask, i, i + 1, false);
  }

  private selectBatch(batch: number): void {
    const p = this.p;
    this.batch = batch;
    const kvLength = p.kvLengths === null ? p.kvSeqLen : p.kvLengths[batch];
    const common = { kvLength, positionOffset: this.positionOffset, causal: p.causal };
    this.mask = { ...common, windowLeft: p.windowLeft, windowRight: p.windowRight };
    this.unboundedMask = { ...common, windowLeft: -1, windowRight: -1 };
    if (p.globalOffsets === null || p.globalIndices === null) return;
    for (const j of this.globals) this.globalMap[j] = 0;
    this.globals = p.globalIndices.subarray(p.globalOffsets[batch], p.globalOffsets[batch + 1]);
    for (const j of this.globals) this.globalMap[j] = 1;
  }

  private isGlobalPosition(position: number): boolean {
    return position >= 0 && position < this.globalMap.length && this.globalMap[position] === 1;
  }

  /** Rows [first, end) under one mask; withGlobals adds the gathered global keys outside the window. */
  private attendRows(mask: RowMask, first: number, end: number, withGlobals: boolean): void {
    const rows = end - first;
    this.rowMax.fill(-Infinity, 0, rows);
    this.rowSum.fill(0, 0, rows);
    this.acc.fill(0, 0, rows * this.p.headDim);
    const pFirst = first + this.positionOffset;
    const pLast = end - 1 + this.positionOffset;

    const range = windowKeyRange(mask, pFirst, pLast);
    for (let jBegin = range.begin; jBegin < range.end; jBegin += KEY_TILE) {
      const jEnd = Math.min(jBegin + KEY_TILE, range.end);
      const visibility = classifyTile(mask, pFirst, pLast, jBegin, jEnd);
      if (visibility === TileVisibility.none) continue;
      for (let c = 0; c < jEnd - jBegin; c++) this.keys[c] = jBegin + c;
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
    for (let g = from; g < to; g += KEY_TILE) {
      const count = Math.min(KEY_TILE, to - g);
      for (let c = 0; c < count; c++) this.keys[c] = this.globals[g + c];
      this.accumulate(mask, first, end, count, KeyCheck.allowed);
    }
  }

  /** One online-softmax step: rows [first, end) against this.keys[0 .. keyCount). */
  private accumulate(mask: RowMask, first: number, end: number, keyCount: number, check: KeyCheck): void {
    const { headDim: dim, scale, qStrides, kStrides, vStrides } = this.p;
    const { q, k, v } = this.b;
    const { keys, scores, acc, globalMap } = this;
    for (let i = first; i < end; i++) {
      const r = i - first;
      if (this.rowIsGlobal[r] === 1) continue;
      const position = i + this.positionOffset;
      const qBase = this.qHeadBase + i * qStrides.seq;

      let tileMax = -Infinity;
      for (let c = 0; c < keyCount; c++) {
        const j = keys[c];
        if (
          (check === KeyCheck.visible && !keyVisible(mask, position, j, globalMap[j] === 1)) ||
          (check === KeyCheck.allowed && !keyAllowed(mask, position, j))
        ) {
          scores[c] = -Infinity;
          continue;
        }
        const kBase = this.kHeadBase + j * kStrides.seq;
        let dot = 0;
        for (let d = 0; d < dim; d++) dot += q[qBase + d] * k[kBase + d];
        const score = dot * scale;
        scores[c] = score;
        if (score > tileMax) tileMax = score;
      }
      if (tileMax === -Infinity) continue; // nothing visible here: the row's state is unchanged

      const newMax = Math.max(this.rowMax[r], tileMax);
      const accBase = r * dim;
      // exp(-Infinity) = 0 on the row's first visible tile, which clears the (zero) state anyway.
      const rescale = Math.exp(this.rowMax[r] - newMax);
      if (rescale !== 1) {
        this.rowSum[r] *= rescale;
        for (let d = 0; d < dim; d++) acc[accBase + d] *= rescale;
      }
      let sum = 0;
      for (let c = 0; c < keyCount; c++) {
        if (scores[c] === -Infinity) continue;
        const weight = Math.exp(scores[c] - newMax);
        sum += weight;
        const vBase = this.vHeadBase + keys[c] * vStrides.seq;
        for (let d = 0; d < dim; d++) acc[accBase + d] += weight * v[vBase + d];
      }
      this.rowSum[r] += sum;
      this.rowMax[r] = newMax;
    }
  }

  /** Normalises rows [first, end) into out and lse; a row that saw nothing gets zeros and -Infinity. */
  private finishRows(first: number, end: number): void {
    const { headDim: dim, outStrides } = this.p;
    const { out, lse } = this.b;
    for (let i = first; i < end; i++) {
      const r = i - first;
      if (this.rowIsGlobal[r] === 1) continue;
      const outBase = this.outHeadBase + i * outStrides.seq;
      const sum = this.rowSum[r];
      const inverse = sum > 0 ? 1 / sum : 0;
      for (let d = 0; d < dim; d++) out[outBase + d] = this.acc[r * dim + d] * inverse;
      if (lse !== null) lse[this.lseHeadBase + i] = sum > 0 ? this.rowMax[r] + Math.log(sum) : -Infinity;
    }
  }
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
