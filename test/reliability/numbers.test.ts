// Non-finite and extreme inputs. The promise (README, "Guarantees"): a NaN or ±Infinity in q, k or v
// never crashes or hangs a call and is never written back into an input; values no query can see
// (padding past kvLengths) have no effect at all; and everything else is what IEEE-754 arithmetic
// gives for the float64 reference (test/reference.ts), namely:
//   - a NaN in q's row i makes row i all NaN and its lse NaN (if the row sees any key);
//   - a NaN in key j makes every row that sees j all NaN, lse NaN; rows that do not see j are untouched;
//   - a NaN (or +Infinity) in v[j][d] makes column d NaN (+Infinity) in exactly the rows that see j;
//   - a +Infinity score makes the row NaN (exp(∞ − ∞)), lse NaN;
//   - a −Infinity score gives its key weight 0, and a row whose every visible score is −Infinity is a
//     row that sees nothing: zeros and lse −Infinity (as the contract says for empty rows).
// Extreme but finite inputs (|x| up to 1e4, scale 1, so logits ~1e9) must give finite results.
import { describe, expect, it } from 'vitest';
import { MODES, attention } from '../helpers/call';
import type { Kind } from '../helpers/cases';
import { BACKENDS, type Backend } from '../helpers/package';
import type { ReferenceOptions } from '../reference';
import { changedOutside, guard, ieeeMismatches, makeProblem, reference, withTimeout } from './support';

function expectNone(mismatches: string[], what: string): void {
  if (mismatches.length > 0) expect.fail(`${what}: ${mismatches.join('; ')}`);
}

const SHAPES: Record<Kind, ReferenceOptions> = {
  // 80 positions span several query and key tiles of every backend, so that a poisoned key sits in a
  // tile that some rows see partly and others not at all.
  full: { batch: 2, heads: 2, kvHeads: 1, seqLen: 80, kvSeqLen: 80, headDim: 16, causal: true },
  localGlobal: { batch: 2, heads: 2, kvHeads: 1, seqLen: 80, kvSeqLen: 80, headDim: 16, window: [4, 4], globalTokens: [0] },
};
const KINDS: Kind[] = ['full', 'localGlobal'];
const POISONS = [NaN, Infinity, -Infinity];

/** Element index of (b, kv head 0, position j, d) in a bhsd tensor with one kv head. */
const kvIndex = (o: ReferenceOptions, b: number, j: number, d: number): number => ((b * (o.kvHeads ?? o.heads)) * (o.kvSeqLen ?? o.seqLen) + j) * o.headDim + d;
const qIndex = (o: ReferenceOptions, b: number, h: number, i: number, d: number): number => ((b * o.heads + h) * o.seqLen + i) * o.headDim + d;

describe.each(BACKENDS)('non-finite inputs on the %s backend', (backend) => {
  it.each(MODES)('%s: NaN/±Infinity anywhere in q, k or v never crashes, hangs or writes an input', async (mode) => {
    for (const kind of KINDS) {
      for (const poison of POISONS) {
        for (const tensor of ['q', 'k', 'v'] as const) {
          const p = makeProblem(kind, SHAPES[kind], 11);
          const target = p[tensor];
          for (let i = 0; i < target.length; i += 97) target[i] = poison;
          const guards = [guard('q', p.q), guard('k', p.k), guard('v', p.v)];
          const lse = new Float32Array(p.options.batch * p.options.heads * p.options.seqLen);
          const out = await withTimeout(
            attention(kind, mode, p.q, p.k, p.v, { ...p.options, lse, backend }), 20_000, `${kind} ${tensor}=${poison}`,
          );
          expect(out.length).toBe(p.q.length);
          for (const g of guards) expect(changedOutside(g)).toBeNull();
        }
      }
    }
  });

  it('non-finite keys and values past kvLengths (padding) change nothing', async () => {
    for (const kind of KINDS) {
      for (const poison of POISONS) {
        const options = { ...SHAPES[kind], kvLengths: [37, 1] };
        const p = makeProblem(kind, options, 12);
        for (let b = 0; b < 2; b++) {
          for (let j = options.kvLengths[b]; j < 80; j++) {
            for (let d = 0; d < 16; d++) {
              p.k[kvIndex(options, b, j, d)] = poison;
              p.v[kvIndex(options, b, j, d)] = poison;
            }
          }
        }
        const want = reference(p);
        for (const mode of MODES) {
          const lse = new Float32Array(2 * 2 * 80);
          const out = await attention(kind, mode, p.q, p.k, p.v, { ...options, lse, backend });
          expectNone(ieeeMismatches(out, want.out, 16, 1e-5), `${kind} ${mode} padding=${poison}`);
          expectNone(ieeeMismatches(lse, want.lse, 1, 1e-5, 'lse', 1), `${kind} ${mode} padding=${poison}`);
        }
      }
    }
  });
});

interface Poisoning {
  name: string;
  poison: (o: ReferenceOptions, q: Float32Array, k: Float32Array, v: Float32Array) => void;
}

// Key 50 of batch item 1: under `causal` rows 0..49 do not see it; under window [4, 4] only rows
// 46..54 (and the global row 0) do. So each poisoning has rows that must stay clean.
const J = 50;
const POISONINGS: Poisoning[] = [
  { name: 'a NaN in one query row', poison: (o, q) => { q[qIndex(o, 1, 1, 60, 3)] = NaN; } },
  { name: 'a NaN in one key', poison: (o, _q, k) => { k[kvIndex(o, 1, J, 3)] = NaN; } },
  { name: 'a NaN in one value', poison: (o, _q, _k, v) => { v[kvIndex(o, 1, J, 3)] = NaN; } },
  { name: 'a +Infinity in one value', poison: (o, _q, _k, v) => { v[kvIndex(o, 1, J, 3)] = Infinity; } },
  {
    name: 'a +Infinity score (key component +Infinity, every query component there positive)',
    poison: (o, q, k) => {
      for (let h = 0; h < o.heads; h++) for (let i = 0; i < o.seqLen; i++) q[qIndex(o, 1, h, i, 3)] = Math.abs(q[qIndex(o, 1, h, i, 3)]);
      k[kvIndex(o, 1, J, 3)] = Infinity;
    },
  },
  {
    name: 'a −Infinity score for one key (weight 0)',
    poison: (o, q, k) => {
      for (let h = 0; h < o.heads; h++) for (let i = 0; i < o.seqLen; i++) q[qIndex(o, 1, h, i, 3)] = Math.abs(q[qIndex(o, 1, h, i, 3)]);
      k[kvIndex(o, 1, J, 3)] = -Infinity;
    },
  },
  {
    name: 'every score of one query row −Infinity (a row that sees nothing)',
    poison: (o, q, k) => {
      for (let j = 0; j < (o.kvSeqLen ?? o.seqLen); j++) k[kvIndex(o, 1, j, 3)] = Math.abs(k[kvIndex(o, 1, j, 3)]);
      q[qIndex(o, 1, 0, 60, 3)] = -Infinity;
    },
  },
];

// Found by this suite: each entry is a (poisoning, kind) whose result on some backends departs from the
// IEEE semantics above. Kept out of the default run until fixed; delete an entry to enable its test.
// (Empty: every backend follows the rules today.)
const KNOWN_BUGS: Array<{ poisoning: string; kinds: Kind[]; backends: string[]; reason: string }> = [];

function knownBug(poisoning: string, kind: Kind, backend: Backend): string {
  return KNOWN_BUGS.find((b) => b.poisoning === poisoning && b.kinds.includes(kind) && b.backends.includes(backend))?.reason ?? '';
}

describe.each(BACKENDS)('NaN and Infinity propagate as IEEE arithmetic does, on the %s backend', (backend) => {
  for (const kind of KINDS) {
    for (const { name, poison } of POISONINGS) {
      const bug = knownBug(name, kind, backend);
      it.skipIf(bug)(`${kind}: ${name}${bug ? ` — skipped, known bug: ${bug}` : ''}`, async () => {
        const p = makeProblem(kind, SHAPES[kind], 13);
        poison(p.options, p.q, p.k, p.v);
        const want = reference(p);
        for (const mode of MODES) {
          const lse = new Float32Array(2 * 2 * 80);
          const out = await withTimeout(attention(kind, mode, p.q, p.k, p.v, { ...p.options, lse, backend }), 20_000, name);
          expectNone(ieeeMismatches(out, want.out, 16, 1e-4), `${mode}`);
          expectNone(ieeeMismatches(lse, want.lse, 1, 1e-4, 'lse', 1), `${mode}`);
        }
      });
    }
  }
});

describe.each(BACKENDS)('extreme but finite inputs on the %s backend', (backend) => {
  const shapes: Array<[Kind, ReferenceOptions]> = [
    ['full', { batch: 1, heads: 2, seqLen: 70, headDim: 64, scale: 1 }],
    ['full', { batch: 1, heads: 1, seqLen: 33, kvSeqLen: 90, headDim: 256, scale: 1, causal: true }],
    ['localGlobal', { batch: 2, heads: 2, kvHeads: 1, seqLen: 90, headDim: 32, scale: 1, window: [5, 5], globalTokens: [3, 80] }],
  ];
  it.each(MODES)('%s: |x| up to 1e4 with scale 1 (logits ~1e9) give finite outputs, each a mix of the values', async (mode) => {
    for (const [kind, options] of shapes) {
      const p = makeProblem(kind, options, 14, 1e4);
      for (let i = 0; i < p.v.length; i++) p.v[i] *= 1e4;
      const want = reference(p);
      expect(want.maxAbsScore).toBeGreaterThan(1e7);
      const lse = new Float32Array(options.batch * options.heads * options.seqLen);
      const out = await attention(kind, mode, p.q, p.k, p.v, { ...options, lse, backend });
      let vMax = 0;
      for (const x of p.v) vMax = Math.max(vMax, Math.abs(x));
      for (let i = 0; i < out.length; i++) {
        if (!Number.isFinite(out[i]) && Number.isFinite(want.out[i])) expect.fail(`${kind}: out[${i}] = ${out[i]}, reference ${want.out[i]}`);
        // A softmax-weighted mean of values can never leave their range.
        if (Math.abs(out[i]) > vMax * (1 + 1e-6)) expect.fail(`${kind}: out[${i}] = ${out[i]} is outside ±${vMax}`);
      }
      for (let r = 0; r < lse.length; r++) {
        const ok = Number.isFinite(lse[r]) && Math.abs(lse[r] - want.lse[r]) <= 1e-5 * Math.abs(want.lse[r]) + 1e-3 * want.maxAbsScore * 1e-3;
        if (!ok) expect.fail(`${kind}: lse[${r}] = ${lse[r]}, reference ${want.lse[r]}`);
      }
    }
  });
});
