// Backend selection as data: a priority list, probed lazily (only as far down as a call needs),
// every probe's verdict remembered with its reason so that users can see why a backend was skipped.
import { BACKEND_NAMES, type Backend, type BackendStatus } from '../types';
import type { BackendImpl } from './backend';
import { jsBackend } from './js';
import { cpuBackend, cudaBackend, nativeLoadFailure } from './native';

/** Best first. 'js' is last and always available, so 'auto' always resolves. */
const PRIORITY: readonly BackendImpl[] = [
  cudaBackend(),
  cpuBackend('avx512'),
  cpuBackend('avx2'),
  cpuBackend('neon'),
  cpuBackend('scalar'),
  jsBackend(),
];

// The registry and the public list of names agree by construction or fail at load.
if (PRIORITY.some((impl, i) => impl.name !== BACKEND_NAMES[i]) || PRIORITY.length !== BACKEND_NAMES.length) {
  throw new Error('lib/backends/registry.ts: PRIORITY must list BACKEND_NAMES in order');
}

const verdicts = new Map<Backend, string | null>();

function unavailableReason(impl: BackendImpl): string | null {
  if (!verdicts.has(impl.name)) {
    let reason: string | null;
    try {
      reason = impl.probe();
    } catch (error) {
      reason = `probing it threw: ${error instanceof Error ? error.message : String(error)}`;
    }
    verdicts.set(impl.name, reason);
  }
  return verdicts.get(impl.name) ?? null;
}

/** Every backend, best first, with whether it is available and why not. Probes all of them. */
export function backendStatuses(): BackendStatus[] {
  return PRIORITY.map((impl) => {
    const reason = unavailableReason(impl);
    const available = reason === null;
    return {
      name: impl.name, available, reason,
      bfloat16Products: available && impl.bfloat16Products(),
      origin: available ? impl.origin() : null,
    };
  });
}

let fallbackWarned = false;

/**
 * The backend a call runs on. A named backend that cannot run here is an Error with the reason;
 * 'auto' takes the first available one and warns once when that is the JS fallback only because
 * the native addon is missing.
 */
export function resolveBackend(choice: 'auto' | Backend): BackendImpl {
  // Verdicts never change once made, so neither does the backend a choice resolves to.
  let impl = resolved.get(choice);
  if (impl === undefined) {
    impl = resolveUncached(choice);
    resolved.set(choice, impl);
  }
  return impl;
}

const resolved = new Map<'auto' | Backend, BackendImpl>();

function resolveUncached(choice: 'auto' | Backend): BackendImpl {
  if (choice !== 'auto') {
    const impl = PRIORITY.find((b) => b.name === choice);
    if (impl === undefined) throw new RangeError(`unknown backend ${JSON.stringify(choice)}`);
    const reason = unavailableReason(impl);
    if (reason !== null) throw new Error(`backend '${choice}' is not available: ${reason}`);
    return impl;
  }
  const impl = PRIORITY.find((b) => unavailableReason(b) === null);
  if (impl === undefined) throw new Error('no backend is available'); // unreachable: js always is
  if (impl.name === 'js') warnNativeFallbackOnce();
  return impl;
}

function warnNativeFallbackOnce(): void {
  const failure = nativeLoadFailure();
  if (failure === null || fallbackWarned) return;
  fallbackWarned = true;
  process.emitWarning(
    `${failure}, so global-local-attention is running on its pure-JavaScript backend, which is much ` +
      'slower. To get the native backends, install CMake (≥ 3.18) and a C++17 compiler, then run ' +
      '`npm rebuild global-local-attention`. backendReport() lists each backend and why it was skipped.',
    { type: 'GlobalLocalAttentionWarning', code: 'GLA_NATIVE_UNAVAILABLE' },
  );
}

/** The available backends, best first. */
export function availableBackends(): Backend[] {
  return backendStatuses()
    .filter((s) => s.available)
    .map((s) => s.name);
}
