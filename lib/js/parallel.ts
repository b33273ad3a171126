// The JS backend's async path: the work units of one call spread over the worker pool.
import { availableParallelism } from 'node:os';
import { deliver } from '../inline-async';
import type { AttentionProblem, KernelBuffers, TensorArray } from '../problem';
import { workUnitCount } from './kernel';
import { WorkerPool } from './pool';

// More chunks than workers, so that a worker that drew cheap units (early causal rows, rows that
// see nothing) picks up more work instead of idling while another finishes.
const CHUNKS_PER_WORKER = 4;

let pool: WorkerPool | undefined;

function sharedPool(): WorkerPool {
  pool ??= new WorkerPool(availableParallelism());
  return pool;
}

/** buffers hold float32 values (lib/backends/js.ts decodes half inputs first). */
export async function runAttentionInWorkers(problem: AttentionProblem, buffers: KernelBuffers): Promise<TensorArray> {
  const workers = sharedPool();
  const units = workUnitCount(problem);
  const lanes = Math.min(problem.threads, workers.size, units);
  const chunks = Math.min(units, lanes * CHUNKS_PER_WORKER);

  // Workers can only see memory the main thread shares with them; copying the inputs also means a
  // caller who mutates, transfers or shrinks q, k or v while the promise is pending cannot touch
  // this call. out and lse are computed aside and copied in at the end (deliver).
  const copies = new Map<TensorArray, Float32Array>();
  const share = (array: TensorArray, copy: boolean): Float32Array => {
    if (!(array instanceof Float32Array)) throw new TypeError('the JS workers compute float32 buffers only');
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
