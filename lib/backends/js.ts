// The pure-TypeScript backend: always available, the fallback when the native addon is missing.
// It computes in float32: half-precision inputs are decoded first (exactly) and a half output is
// rounded once at the end, as the native kernels without a bfloat16 product do.
import { decodeHalf } from '../half';
import { deliver, writeOutput } from '../inline-async';
import { runAttention } from '../js/kernel';
import { runAttentionInWorkers } from '../js/parallel';
import {
  type AttentionBuffers, type AttentionProblem, DTYPE_CODES, type KernelBuffers, newOutput, outputLength, type TensorArray,
} from '../problem';
import type { BackendImpl } from './backend';

function withOut(problem: AttentionProblem, buffers: AttentionBuffers): KernelBuffers {
  return { ...buffers, out: buffers.out ?? newOutput(problem) };
}

function isFloat32Problem(problem: AttentionProblem): boolean {
  return problem.dtype === DTYPE_CODES.float32 && problem.outDtype === DTYPE_CODES.float32;
}

/** A tensor as float32 values, in memory the workers can share when `shared`. */
function float32Values(problem: AttentionProblem, array: TensorArray, shared: boolean): Float32Array {
  const wide = new Float32Array(shared ? new SharedArrayBuffer(array.length * 4) : new ArrayBuffer(array.length * 4));
  if (array instanceof Float32Array) {
    wide.set(array);
  } else {
    decodeHalf(problem.dtype === DTYPE_CODES.float16 ? 'float16' : 'bfloat16', array, wide);
  }
  return wide;
}

/** The call in float32: q, k, v decoded (into memory of its own), out and lse computed aside. */
function widened(problem: AttentionProblem, buffers: AttentionBuffers, shared: boolean): KernelBuffers {
  const length = outputLength(problem);
  const memory = (bytes: number) => (shared ? new SharedArrayBuffer(bytes) : new ArrayBuffer(bytes));
  const q = float32Values(problem, buffers.q, shared);
  const k = buffers.k === buffers.q ? q : float32Values(problem, buffers.k, shared);
  const v = buffers.v === buffers.k ? k : float32Values(problem, buffers.v, shared);
  return {
    q, k, v,
    out: new Float32Array(memory(length * 4)),
    lse: buffers.lse === null ? null : new Float32Array(memory(buffers.lse.length * 4)),
  };
}

export function jsBackend(): BackendImpl {
  return {
    name: 'js',
    // A worker round trip costs 50-150 µs; this is about 100 µs of the JS kernel.
    inlineMultiplyAdds: 2 ** 18,
    probe: () => null,
    bfloat16Products: () => false,
    origin: () => 'pure TypeScript (dist/js/)',
    runSync(problem, buffers) {
      if (isFloat32Problem(problem)) {
        const filled = withOut(problem, buffers);
        runAttention(problem, filled);
        return filled.out;
      }
      const wide = widened(problem, buffers, false);
      runAttention(problem, wide);
      const out = buffers.out ?? newOutput(problem);
      writeOutput(wide.out, out, problem.outDtype);
      if (buffers.lse !== null) buffers.lse.set(wide.lse as Float32Array);
      return out;
    },
    async runAsync(problem, buffers) {
      if (isFloat32Problem(problem)) return runAttentionInWorkers(problem, withOut(problem, buffers));
      const wide = widened(problem, buffers, true);
      await runAttentionInWorkers(problem, wide);
      const target = withOut(problem, buffers);
      deliver(wide, target, problem.outDtype);
      return target.out;
    },
  };
}
