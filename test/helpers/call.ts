// One entry point over the four public functions, so that suites can loop over kind × sync/async.
import type { Kind } from './cases';
import { gla } from './package';

export type Mode = 'sync' | 'async';
export const MODES: Mode[] = ['sync', 'async'];

/** Options are passed through untyped on purpose: error tests send invalid ones. */
export async function attention(
  kind: Kind, mode: Mode, q: unknown, k: unknown, v: unknown, options: unknown,
): Promise<Float32Array> {
  const args = [q, k, v, options] as unknown as Parameters<typeof gla.localGlobalAttentionSync>;
  // Float32Array for float32 calls; the half-precision suites cast to the array they asked for.
  if (kind === 'full') return (mode === 'sync' ? gla.fullAttentionSync(...args) : await gla.fullAttention(...args)) as Float32Array;
  return (mode === 'sync' ? gla.localGlobalAttentionSync(...args) : await gla.localGlobalAttention(...args)) as Float32Array;
}
