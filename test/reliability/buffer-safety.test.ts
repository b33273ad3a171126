// An async call survives whatever the caller does to its buffers while it runs. Each scenario runs
// in its own process (fixtures/buffer-safety.cjs), so that a crash fails one test instead of the
// runner: the caller transfers q, k and v away (what postMessage with a transfer list does), or out,
// or lse, or the Int32Array masks; shrinks a resizable ArrayBuffer behind q, k/v, out or lse;
// overwrites its inputs; or hands in SharedArrayBuffers (used in place). Acceptable outcomes only:
// the right result (inputs were copied at submit), or a rejection naming the output that can no
// longer take it, with nothing written to non-shared memory. Memory given up and reused meanwhile (sentinel arrays
// allocated after the detach) must be untouched when the call settles.
import { describe, expect, it } from 'vitest';
import { BACKENDS } from '../helpers/package';
import { EMULATED_CUDA_PLUGIN, FIXTURES, runNode } from './support';
import * as path from 'node:path';

const CRASH = /Segmentation fault|Aborted|core dumped|FATAL ERROR|AddressSanitizer|runtime error:|terminate called/;

interface Report {
  settled: 'resolved' | 'rejected';
  sentinelsIntact: boolean;
  given: string[];
  returnedOut?: boolean;
  outError?: number;
  lseError?: number;
  errorClass?: string;
  message?: string;
  lseUntouched?: boolean;
  outUntouched?: boolean;
}

/** What each scenario must end in: 'result' (correct output) or the output the rejection names. */
const SCENARIOS: Record<string, 'result' | { rejects: string; detail: RegExp }> = {
  'transfer-qkv': 'result',
  'transfer-out': { rejects: 'options.out', detail: /detached/ },
  'transfer-lse': { rejects: 'options.lse', detail: /detached/ },
  'shrink-q': 'result',
  'shrink-kv': 'result',
  'shrink-out': { rejects: 'options.out', detail: /has 0 elements now.*resized/ },
  'shrink-lse': { rejects: 'options.lse', detail: /has 0 elements now.*resized/ },
  'transfer-masks': 'result',
  'overwrite-inputs': 'result',
  'no-out': 'result',
  shared: 'result',
  'shared-inputs': 'result',
};

// cuda too: on a GPU machine it is in BACKENDS; elsewhere through the emulated plugin when built.
const RUN_ON = BACKENDS.includes('cuda') || EMULATED_CUDA_PLUGIN === null ? BACKENDS : ['cuda' as const, ...BACKENDS];
const envFor = (backend: string): NodeJS.ProcessEnv =>
  backend === 'cuda' && !BACKENDS.includes('cuda') ? { GLA_CUDA_PLUGIN: EMULATED_CUDA_PLUGIN as string } : {};

describe.each(RUN_ON)('async buffer safety on %s', (backend) => {
  it.each(Object.entries(SCENARIOS))('%s', async (scenario, want) => {
    const r = await runNode(['--expose-gc', path.join(FIXTURES, 'buffer-safety.cjs'), backend, scenario], 120_000, envFor(backend));
    expect(r.stderr).not.toMatch(CRASH);
    expect({ code: r.code, signal: r.signal }, r.stderr).toEqual({ code: 0, signal: null });
    const report = JSON.parse(r.stdout.trim()) as Report;
    expect(report.sentinelsIntact, 'memory the caller gave up was written').toBe(true);
    if (want === 'result') {
      expect(report.settled, report.message).toBe('resolved');
      expect(report.returnedOut).toBe(true);
      expect(report.outError).toBeLessThanOrEqual(1e-6);
      expect(report.lseError).toBeLessThanOrEqual(1e-6);
    } else {
      expect(report.settled).toBe('rejected');
      expect(report.errorClass).toBe('Error');
      expect(report.message).toContain(want.rejects);
      expect(report.message).toMatch(want.detail);
      expect(report.message).toMatch(/result was discarded/);
      expect(report.lseUntouched && report.outUntouched, 'a rejected call wrote its other output').toBe(true);
    }
  }, 150_000);
});
