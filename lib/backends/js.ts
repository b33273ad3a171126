// The pure-TypeScript backend: always available, the fallback when the native addon is missing.
import { runAttention } from '../js/kernel';
import { runAttentionInWorkers } from '../js/parallel';
import type { AttentionBuffers, AttentionProblem, KernelBuffers } from '../problem';
import type { BackendImpl } from './backend';

function withOut(problem: AttentionProblem, buffers: AttentionBuffers): KernelBuffers {
  const out = buffers.out ?? new Float32Array(problem.batch * problem.heads * problem.seqLen * problem.headDim);
  return { ...buffers, out };
}

export function jsBackend(): BackendImpl {
  return {
    name: 'js',
    // A worker round trip costs 50-150 µs; this is about 100 µs of the JS kernel.
    inlineMultiplyAdds: 2 ** 18,
    probe: () => null,
    runSync(problem, buffers) {
      const filled = withOut(problem, buffers);
      runAttention(problem, filled);
      return filled.out;
    },
    runAsync: (problem, buffers) => runAttentionInWorkers(problem, withOut(problem, buffers)),
  };
}
