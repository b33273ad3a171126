// The pure-TypeScript backend: always available, the fallback when the native addon is missing.
import { runAttention } from '../js/kernel';
import { runAttentionInWorkers } from '../js/parallel';
import type { BackendImpl } from './backend';

export function jsBackend(): BackendImpl {
  return {
    name: 'js',
    probe: () => null,
    runSync: (problem, buffers) => runAttention(problem, buffers),
    runAsync: (problem, buffers) => runAttentionInWorkers(problem, buffers),
  };
}
