// Inputs, the correctness check and the timing loop: the parts every figure depends on.

/**
 * Uniform values with magnitude in [0.05, 1] and random sign. Never zero, so a kernel that skips
 * work or reads the wrong tile cannot pass the check by accident. xorshift32: seeded and fast
 * enough to fill the 128 MiB decode caches in well under a second.
 */
export function randomTensor(n, seed) {
  const out = new Float32Array(n);
  let x = seed >>> 0 || 0x9e3779b9;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    const u = (x >>> 0) / 4294967296;
    out[i] = u < 0.5 ? -(0.05 + 1.9 * u) : 0.05 + 1.9 * (u - 0.5);
  }
  return out;
}

/** ||a - b|| / ||b|| in double precision; Infinity when shapes differ or a value is not finite. */
export function relL2(a, b) {
  if (!a || a.length !== b.length) return Infinity;
  let num = 0;
  let den = 0;
  for (let i = 0; i < b.length; i++) {
    const d = a[i] - b[i];
    num += d * d;
    den += b[i] * b[i];
  }
  const r = Math.sqrt(num / (den || 1));
  return Number.isFinite(r) ? r : Infinity;
}

export const TOLERANCE = 1e-4;

function stats(samples) {
  const s = [...samples].sort((x, y) => x - y);
  const mid = s.length >> 1;
  return {
    median: s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2,
    min: s[0],
    max: s[s.length - 1],
    reps: s.length,
  };
}

/** How many calls make one repetition last about targetMs, from one timed call. */
export async function callsFor(run, targetMs) {
  let n = 1;
  for (;;) {
    const t0 = performance.now();
    for (let i = 0; i < n; i++) {
      const r = run();
      if (r && typeof r.then === 'function') await r;
    }
    const t = performance.now() - t0;
    if (t >= targetMs / 4 || n >= 1 << 20) return Math.max(1, Math.ceil((n * targetMs) / Math.max(t, 1e-3)));
    n *= 4;
  }
}

/**
 * Times several ways of doing the same work as a paired comparison: each round calls every run
 * once, in an order that rotates from round to round, so that a slow spell of the (shared) machine
 * lands on all of them alike. After `warmup` rounds, at least minRounds rounds, then more until
 * budgetMs or maxRounds. Returns { name: { median, min, max, reps } } in milliseconds, and, per
 * name, the median over rounds of its time divided by the first run's in the same round
 * (`ratioToFirst`), which is steadier than a ratio of medians.
 */
export async function timeInterleaved(runs, { warmup = 1, minRounds = 5, maxRounds = 40, budgetMs = 4000 } = {}) {
  const names = Object.keys(runs);
  const call = async (name) => {
    const t0 = performance.now();
    const r = runs[name]();
    if (r && typeof r.then === 'function') await r;
    return performance.now() - t0;
  };
  for (let i = 0; i < warmup; i++) for (const name of names) await call(name);
  const samples = Object.fromEntries(names.map((n) => [n, []]));
  const ratios = Object.fromEntries(names.map((n) => [n, []]));
  const start = performance.now();
  for (let round = 0; round < minRounds || (round < maxRounds && performance.now() - start < budgetMs); round++) {
    const times = {};
    for (let j = 0; j < names.length; j++) {
      const name = names[(round + j) % names.length];
      times[name] = await call(name);
    }
    for (const name of names) {
      samples[name].push(times[name]);
      ratios[name].push(times[name] / times[names[0]]);
    }
  }
  const result = {};
  for (const name of names) result[name] = { ...stats(samples[name]), ratioToFirst: stats(ratios[name]).median };
  return result;
}
