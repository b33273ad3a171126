// The JS backend's async path: the work units of one call spread over the worker pool.
import { availableParallelism } from 'node:os';
import type { KernelBuffers } from '../backends/backend';
import { isDetached } from '../detached';
import type { AttentionProblem } from '../problem';
import { runAttention, workUnitCount } from './kernel';
import { WorkerPool } from './pool';

// More chunks than workers, so that a worker that drew cheap units (early causal rows, rows that
// see nothing) picks up more work instead of idling while another finishes.
const CHUNKS_PER_WORKER = 4;

// A worker round trip (post, wake, reply, resolve) costs some 50-150 µs, more than a small call
// computes in; below this many multiply-adds (~100 µs of kernel time at the kernel's usual rate)
// the call runs at once on this thread, which blocks the event loop for less than a round trip would.
const INLINE_MULTIPLY_ADDS = 2 ** 18;

let pool: WorkerPool | undefined;

function sharedPool(): WorkerPool {
  pool ??= new WorkerPool(availableParallelism());
  return pool;
}

export async function runAttentionInWorkers(problem: AttentionProblem, buffers: KernelBuffers): Promise<Float32Array> {
  // An upper bound (every key visible) is enough to tell a small call from a large one.
  const multiplyAdds = 2 * problem.batch * problem.heads * problem.seqLen * problem.kvSeqLen * problem.headDim;
  if (multiplyAdds <= INLINE_MULTIPLY_ADDS) {
    // Computed now, delivered when the promise settles, as every async call: a caller that gives up
    // out or lse right after the call gets the same rejection from every backend.
    const aside: KernelBuffers = {
      ...buffers,
      out: new Float32Array(buffers.out.length),
      lse: buffers.lse === null ? null : new Float32Array(buffers.lse.length),
    };
    runAttention(problem, aside);
    await undefined;
    deliver(aside, buffers);
    return buffers.out;
  }
  const workers = sharedPool();
  const units = workUnitCount(problem);
  const lanes = Math.min(problem.threads, workers.size, units);
  const chunks = Math.min(units, lanes * CHUNKS_PER_WORKER);

  // Workers can only see memory the main thread shares with them; copying the inputs also means a
  // caller who mutates, transfers or shrinks q, k or v while the promise is pending cannot touch
  // this call. out and lse are computed aside and copied in at the end (deliver).
  const copies = new Map<Float32Array, Float32Array>();
  const share = (array: Float32Array, copy: boolean): Float32Array => {
    if (array.buffer instanceof SharedArrayBuffer) return array;
    let shared = copies.get(array);
    if (shared === undefined) {
      shared = new Float32Array(new SharedArrayBuffer(array.byteLength));
      if (copy) shared.set(array);
      copies.set(array, shared);
    }
    return shared;
  };
  const shared: KernelBuffers = {
    q: share(buffers.q, true),
    k: share(buffers.k, true),
    v: share(buffers.v, true),
    out: share(buffers.out, false),
    lse: buffers.lse === null ? null : share(buffers.lse, false),
  };

  const ranges: Array<[number, number]> = [];
  for (let c = 0; c < chunks; c++) {
    ranges.push([Math.floor((c * units) / chunks), Math.floor(((c + 1) * units) / chunks)]);
  }
  // `lanes` loops each take the next chunk when done, so at most `lanes` workers serve this call,
  // which is what the threads option promises.
  let next = 0;
  const lane = async (): Promise<void> => {
    while (next < ranges.length) {
      const [firstUnit, endUnit] = ranges[next++];
      await workers.run({ problem, buffers: shared, firstUnit, endUnit });
    }
  };
  const results = await Promise.allSettled(Array.from({ length: lanes }, lane));
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed !== undefined) throw failed.reason;

  deliver(shared, buffers);
  return buffers.out;
}

/** Copies the outputs computed aside into the caller's; all or nothing, as the native backends. */
function deliver(aside: KernelBuffers, target: KernelBuffers): void {
  const out = aside.out !== target.out;
  const lse = target.lse !== null && aside.lse !== target.lse;
  if (out) checkStillWritable('options.out', target.out, aside.out.length);
  if (lse) checkStillWritable('options.lse', target.lse as Float32Array, (aside.lse as Float32Array).length);
  if (out) target.out.set(aside.out);
  if (lse) (target.lse as Float32Array).set(aside.lse as Float32Array);
}

/** The caller may have transferred or resized an output while the call ran: say so, write nothing. */
function checkStillWritable(name: string, target: Float32Array, length: number): void {
  if (target.length === length) return;
  throw new Error(
    isDetached(target)
      ? `${name} was detached (its ArrayBuffer was transferred) while the call ran; the result was discarded`
      : `${name} has ${target.length} elements now, ${length} when the call started (its resizable ArrayBuffer was resized while the call ran); the result was discarded`,
  );
}
