// The addon in several threads and at teardown: loaded by 4 worker_threads at once, each calling
// every backend sync and async, all results right and every worker exiting cleanly; a worker
// terminated with calls in flight; and a process that calls process.exit() with calls in flight
// exits with code 0 rather than crashing in a half-torn-down addon.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { Kind } from '../helpers/cases';
import { relativeL2 } from '../helpers/compare';
import { BACKENDS } from '../helpers/package';
import type { ReferenceOptions } from '../reference';
import { FIXTURES, makeProblem, reference, runNode } from './support';

const CRASH = /Segmentation fault|Aborted|core dumped|FATAL ERROR|AddressSanitizer|runtime error:|terminate called/;

const CASES: Array<{ name: string; kind: Kind; options: ReferenceOptions }> = [
  { name: 'full GQA causal', kind: 'full', options: { batch: 2, heads: 4, kvHeads: 2, seqLen: 37, kvSeqLen: 70, headDim: 24, causal: true } },
  { name: 'local-global bshd', kind: 'localGlobal', options: { batch: 1, heads: 2, seqLen: 65, headDim: 17, layout: 'bshd', window: [4, 2], globalTokens: [0, 64] } },
];

describe('worker_threads', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gla-workers-'));
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it(`a worker terminated with native async calls in flight does not take the process down`, async () => {
    for (let attempt = 0; attempt < 3; attempt++) {
      const r = await runNode([path.join(FIXTURES, 'workers.cjs'), 'terminate'], 60_000);
      expect(r.stderr).not.toMatch(CRASH);
      expect({ code: r.code, signal: r.signal, stdout: r.stdout.trim() }, r.stderr).toEqual({ code: 0, signal: null, stdout: '"terminated"' });
    }
  }, 150_000);

  it('4 workers load the addon at once, call every backend sync and async, get the reference, exit 0', async () => {
    const problems = CASES.map((c, i) => {
      const p = makeProblem(c.kind, c.options, 300 + i);
      return { name: c.name, kind: c.kind, options: c.options, q: Array.from(p.q), k: Array.from(p.k), v: Array.from(p.v), want: reference(p).out };
    });
    const file = path.join(dir, 'problems.json');
    fs.writeFileSync(file, JSON.stringify(problems.map(({ want: _want, ...p }) => p)));
    const r = await runNode([path.join(FIXTURES, 'workers.cjs'), file], 120_000);
    expect(r.stderr).not.toMatch(CRASH);
    expect({ code: r.code, signal: r.signal }, r.stderr).toEqual({ code: 0, signal: null });
    const workers = JSON.parse(r.stdout) as Array<{ code: number; message: { backends?: string[]; error?: string; results: Array<{ name: string; backend: string; sync: number[]; async: number[] }> } }>;
    expect(workers).toHaveLength(4);
    for (const w of workers) {
      expect(w.message.error).toBeUndefined();
      expect(w.code).toBe(0);
      // A worker sees the same backends as the main thread: the addon is context-aware.
      expect(w.message.backends).toEqual(BACKENDS);
      expect(w.message.results).toHaveLength(CASES.length * BACKENDS.length);
      for (const result of w.message.results) {
        const want = problems.find((p) => p.name === result.name)?.want as Float64Array;
        expect(relativeL2(result.sync, want), `${result.name} ${result.backend} sync`).toBeLessThanOrEqual(1e-5);
        expect(relativeL2(result.async, want), `${result.name} ${result.backend} async`).toBeLessThanOrEqual(1e-5);
      }
    }
  }, 150_000);
});


// The process starts, loads the addon and queues every call (copying each one's inputs) before it
// exits: about 0.9 s here, 3.6 s under ASan, whose allocator and memcpy are several times slower.
// Computing the backlog would take far longer than either bound.
const PROMPT_EXIT_MS = process.env.GLA_UNDER_ASAN === '1' ? 9000 : 3000;

describe('process.exit with calls in flight', () => {
  it.skipIf(!BACKENDS.some((b) => b !== 'js'))(`is prompt with a backlog of 100 native calls per backend`, async () => {
    const r = await runNode([path.join(FIXTURES, 'exit-in-flight.cjs'), '-1', '100'], 60_000);
    expect({ code: r.code, signal: r.signal }, r.stderr).toEqual({ code: 0, signal: null });
    expect(r.ms).toBeLessThan(PROMPT_EXIT_MS);
  }, 90_000);

  // -1: exit synchronously right after queueing; the others land mid-computation.
  for (const delay of [-1, 0, 5, 50, 200]) {
    it(`exits with code 0 and no crash (exit ${delay < 0 ? 'immediately' : `after ${delay} ms`})`, async () => {
      const r = await runNode([path.join(FIXTURES, 'exit-in-flight.cjs'), String(delay)], 60_000);
      expect(r.stderr).not.toMatch(CRASH);
      expect({ code: r.code, signal: r.signal }, r.stderr).toEqual({ code: 0, signal: null });
    }, 90_000);
  }
});
