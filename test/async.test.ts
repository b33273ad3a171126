// The async functions must leave the event loop free: a 10 ms interval keeps firing (lag < 50 ms)
// while a call of about a second runs, on the JS backend (worker threads) and on each native one.
import { describe, expect, it } from 'vitest';
import { measureLag } from './helpers/lag';
import { randomNonZero, rng } from './helpers/random';
import { type Backend, gla } from './helpers/package';

const MAX_LAG_MS = 50;
const TARGET_MS = 1000;
const MIN_MS = 400;
const ATTEMPTS = 5;

interface Shape {
  batch: number;
  heads: number;
  seqLen: number;
  headDim: number;
}

/** Builds the inputs up front, so that only the call itself runs while the lag is measured. */
function prepareCall(backend: Backend, shape: Shape): () => Promise<Float32Array> {
  const random = rng(1);
  const n = shape.batch * shape.heads * shape.seqLen * shape.headDim;
  const q = randomNonZero(n, random);
  const k = randomNonZero(n, random);
  const v = randomNonZero(n, random);
  return () => gla.fullAttention(q, k, v, { ...shape, causal: true, backend });
}

/**
 * Grows seqLen (cost ∝ seqLen²) until a call takes at least MIN_MS whatever this machine's speed (a
 * short call proves nothing), then requires one of up to ATTEMPTS such calls to keep the lag under
 * MAX_LAG_MS. A call that blocks the event loop lags by its whole duration on every attempt; a
 * busy machine (other test files, a compiler) delays a tick now and then but not on every attempt.
 */
async function expectEventLoopKeepsTicking(backend: Backend, start: Shape): Promise<void> {
  let shape = start;
  const lags: number[] = [];
  for (let call = 0; call < 14 && lags.length < ATTEMPTS; call++) {
    const { maxLagMs, elapsedMs } = await measureLag(prepareCall(backend, shape));
    if (elapsedMs < MIN_MS) {
      const factor = Math.min(4, Math.sqrt(TARGET_MS / Math.max(elapsedMs, 1)));
      shape = { ...shape, seqLen: Math.ceil(shape.seqLen * factor) };
      continue;
    }
    if (maxLagMs < MAX_LAG_MS) return;
    lags.push(Math.round(maxLagMs));
  }
  expect.fail(
    lags.length === 0
      ? `no call on ${backend} reached ${MIN_MS} ms; the last shape was ${JSON.stringify(shape)}`
      : `the event loop lagged by ${lags.join(', ')} ms during ${lags.length} calls of ≥ ${MIN_MS} ms on ${backend}`,
  );
}

describe('async calls keep the event loop ticking', () => {
  it('js backend (worker threads), ~1 s call', async () => {
    await expectEventLoopKeepsTicking('js', { batch: 1, heads: 2, seqLen: 256, headDim: 64 });
  });

  const native = gla.backendReport().filter((s) => s.name !== 'js');
  for (const status of native) {
    const title = status.available
      ? `${status.name} backend, ~1 s call`
      : `${status.name} backend: not available here (${status.reason}), so this only confirms backends() omits it`;
    it(title, async () => {
      if (!status.available) {
        expect(gla.backends()).not.toContain(status.name);
        return;
      }
      await expectEventLoopKeepsTicking(status.name, { batch: 1, heads: 4, seqLen: 1024, headDim: 64 });
    });
  }
});
