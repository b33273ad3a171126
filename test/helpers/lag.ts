import { performance } from 'node:perf_hooks';

/** The interval whose lateness is measured: a tick that arrives late shows the event loop was blocked. */
export const TICK_MS = 10;

/**
 * Runs `run` while a TICK_MS interval records how late each tick fires. The largest lateness is the
 * event-loop lag; it includes the end of the run, since a call that blocked the loop until it
 * finished would never let the interval report the gap.
 */
export async function measureLag<T>(run: () => Promise<T>): Promise<{ result: T; maxLagMs: number; elapsedMs: number }> {
  let last = performance.now();
  let maxLagMs = 0;
  const timer = setInterval(() => {
    const now = performance.now();
    maxLagMs = Math.max(maxLagMs, now - last - TICK_MS);
    last = now;
  }, TICK_MS);
  const start = performance.now();
  let result: T;
  try {
    result = await run();
  } finally {
    clearInterval(timer);
  }
  const end = performance.now();
  maxLagMs = Math.max(maxLagMs, end - last - TICK_MS);
  return { result, maxLagMs, elapsedMs: end - start };
}
