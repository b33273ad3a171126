// Deterministic inputs, so that a failing case reproduces from its name alone.

/** mulberry32: tiny, fast, good enough to spread test values. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function seedOf(text: string): number {
  let h = 2166136261;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 16777619);
  return h >>> 0;
}

/** Values in ±[0.1, 1]·magnitude: never zero, so a kernel that skips or drops a term shows up. */
export function randomNonZero(length: number, random: () => number, magnitude = 1): Float32Array {
  const values = new Float32Array(length);
  for (let i = 0; i < length; i++) {
    const size = 0.1 + 0.9 * random();
    values[i] = (random() < 0.5 ? -size : size) * magnitude;
  }
  return values;
}
