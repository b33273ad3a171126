// Async calls too small to be worth a thread hop. Handing a call to another thread and settling it
// back costs some 10 µs of the JS thread's time (native dispatcher: a wake-up and a completion
// signal; JS workers: 50-150 µs of messaging), far more than a tiny problem computes in. Below its
// backend's inlineMultiplyAdds such a call computes at once, on this thread, into memory of its
// own, and delivers the result when the Promise settles, exactly as a call that ran elsewhere:
// a caller that gives up out or lse right after the call gets the same rejection either way.
import type { BackendImpl } from './backends/backend';
import { isDetached } from './detached';
import { encodeHalf } from './half';
import { type AttentionBuffers, type AttentionProblem, DTYPE_CODES, type KernelBuffers, type TensorArray } from './problem';

/** Multiply-adds of QK^T and P·V with every key visible: an upper bound, enough to tell small from large. */
export function multiplyAddBound(problem: AttentionProblem): number {
  return 2 * problem.batch * problem.heads * problem.seqLen * problem.kvSeqLen * problem.headDim;
}

export async function runInline(backend: BackendImpl, problem: AttentionProblem, buffers: AttentionBuffers): Promise<TensorArray> {
  const aside: AttentionBuffers = {
    ...buffers,
    out: buffers.out === null ? null : sameKind(buffers.out),
    lse: buffers.lse === null ? null : asideFloat32(buffers.lse.length),
  };
  const out = backend.runSync(problem, aside);
  await undefined;
  // Without a caller's out, the backend's own array is the result: nothing to copy for it.
  const target: KernelBuffers = { ...buffers, out: buffers.out ?? out };
  deliver({ ...aside, out }, target);
  return target.out;
}

// Memory aside for outputs that are copied into the caller's at settlement and never seen by
// anyone: carved from shared slabs, since a typed array with a backing store of its own (malloc,
// zeroing, external-memory accounting) cost more than the tiny call it holds (12% of an inline
// async call's JS time, profiled). A slab is freed when the last view carved from it is. Results
// the caller receives (no out given) are never carved: their buffer is theirs alone.
const SLAB_BYTES = 64 * 1024;
let slab = new ArrayBuffer(SLAB_BYTES);
let slabUsed = 0;

/** Where in `slab` (as it is after the call) `bytes` were set aside, or -1 for a large request. */
function carve(bytes: number): number {
  if (bytes > SLAB_BYTES / 16) return -1;
  // 16-byte steps keep every view aligned as a fresh allocation would be.
  const size = (bytes + 15) & ~15;
  if (slabUsed + size > SLAB_BYTES) {
    slab = new ArrayBuffer(SLAB_BYTES);
    slabUsed = 0;
  }
  const at = slabUsed;
  slabUsed += size;
  return at;
}

function asideFloat32(length: number): Float32Array {
  const at = carve(length * 4);
  return at < 0 ? new Float32Array(length) : new Float32Array(slab, at, length);
}

function asideUint16(length: number): Uint16Array {
  const at = carve(length * 2);
  return at < 0 ? new Uint16Array(length) : new Uint16Array(slab, at, length);
}

function sameKind(array: TensorArray): TensorArray {
  return array instanceof Float32Array ? asideFloat32(array.length) : asideUint16(array.length);
}

/**
 * Copies the outputs computed aside into the caller's; all or nothing, as the native backends.
 * A float32 aside out with a half target (the JS backend computes in float32) is rounded into it.
 */
export function deliver(aside: KernelBuffers, target: KernelBuffers, outDtype?: number): void {
  const out = aside.out !== target.out;
  const lse = target.lse !== null && aside.lse !== target.lse;
  if (out) checkStillWritable('options.out', target.out, aside.out.length);
  if (lse) checkStillWritable('options.lse', target.lse as Float32Array, (aside.lse as Float32Array).length);
  if (out) writeOutput(aside.out, target.out, outDtype);
  if (lse) (target.lse as Float32Array).set(aside.lse as Float32Array);
}

/** from into to: a copy, or float32 values rounded into the bits of to's half type. */
export function writeOutput(from: TensorArray, to: TensorArray, outDtype?: number): void {
  if (from instanceof Float32Array && to instanceof Uint16Array) {
    encodeHalf(outDtype === DTYPE_CODES.float16 ? 'float16' : 'bfloat16', from, to);
    return;
  }
  (to as Float32Array).set(from as Float32Array);
}

/** The caller may have transferred or resized an output while the call ran: say so, write nothing. */
function checkStillWritable(name: string, target: TensorArray, length: number): void {
  if (target.length === length) return;
  throw new Error(
    isDetached(target)
      ? `${name} was detached (its ArrayBuffer was transferred) while the call ran; the result was discarded`
      : `${name} has ${target.length} elements now, ${length} when the call started (its resizable ArrayBuffer was resized while the call ran); the result was discarded`,
  );
}
