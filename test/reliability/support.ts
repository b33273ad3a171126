// Shared by the reliability suites: deterministic problems with their float64 reference, guards that
// prove no input was written, a timeout that turns a hang into a failure, and an IEEE-aware compare.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { type Kind, inputLengths } from '../helpers/cases';
import { ROOT } from '../helpers/package';
import { randomNonZero, rng } from '../helpers/random';
import { type ReferenceOptions, type ReferenceResult, referenceAttention } from '../reference';

export const FIXTURES = path.join(ROOT, 'test', 'reliability', 'fixtures');
/** Set by .ci/run: the long load and leak runs happen only there, to keep `npm test` short. */
export const HEAVY = process.env.GLA_HEAVY === '1';

export interface Problem {
  kind: Kind;
  options: ReferenceOptions;
  q: Float32Array;
  k: Float32Array;
  v: Float32Array;
}

export function makeProblem(kind: Kind, options: ReferenceOptions, seed: number, magnitude = 1): Problem {
  const random = rng(seed);
  const n = inputLengths(options);
  return {
    kind,
    options,
    q: randomNonZero(n.q, random, magnitude),
    k: randomNonZero(n.kv, random, magnitude),
    v: randomNonZero(n.kv, random),
  };
}

export function reference(p: Problem): ReferenceResult {
  return referenceAttention(p.q, p.k, p.v, p.options);
}

/** A byte copy of a view's whole backing store, so that writes outside the view show up too. */
export interface Guard {
  name: string;
  bytes: Uint8Array;
  before: Uint8Array;
}

export function guard(name: string, view: ArrayBufferView): Guard {
  const bytes = new Uint8Array(view.buffer, 0, view.buffer.byteLength);
  return { name, bytes, before: bytes.slice() };
}

/** Every byte of the backing store outside [from, to) (the range the call may write) is unchanged. */
export function changedOutside(g: Guard, from = 0, to = 0): string | null {
  for (let i = 0; i < g.before.length; i++) {
    if ((i < from || i >= to) && g.bytes[i] !== g.before[i]) return `${g.name}: byte ${i} of its buffer changed`;
  }
  return null;
}

export async function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not settle within ${ms} ms (a hang)`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function kindOf(x: number): 'NaN' | '+Infinity' | '-Infinity' | 'finite' {
  if (Number.isNaN(x)) return 'NaN';
  if (x === Infinity) return '+Infinity';
  if (x === -Infinity) return '-Infinity';
  return 'finite';
}

/**
 * Where `actual` departs from the float64 reference: a NaN/±Infinity where the reference has
 * another class of value, or a finite value off by more than `tolerance` relative to its row's
 * largest finite reference value (at least `floor`). Returns the first few, as text.
 */
export function ieeeMismatches(
  actual: Float32Array, expected: Float64Array, rowLength: number, tolerance = 1e-4, what = 'out', floor = 1e-30,
): string[] {
  const found: string[] = [];
  for (let row = 0; row * rowLength < expected.length && found.length < 5; row++) {
    let scale = 0;
    for (let d = 0; d < rowLength; d++) {
      const x = expected[row * rowLength + d];
      if (Number.isFinite(x)) scale = Math.max(scale, Math.abs(x));
    }
    for (let d = 0; d < rowLength && found.length < 5; d++) {
      const i = row * rowLength + d;
      const a = actual[i];
      const e = expected[i];
      if (kindOf(a) !== kindOf(e)) found.push(`${what}[${i}] is ${a}, expected ${e}`);
      else if (Number.isFinite(e) && Math.abs(a - e) > tolerance * Math.max(scale, floor)) found.push(`${what}[${i}] is ${a}, expected ${e}`);
    }
  }
  return found;
}

export interface ChildResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** Runs a fixture in its own node process, killed (and reported) after `timeoutMs`. */
export function runNode(args: string[], timeoutMs: number, env: NodeJS.ProcessEnv = {}): Promise<ChildResult> {
  const start = Date.now();
  return new Promise((resolve) => {
    const childEnv = { ...process.env, ...env };
    delete childEnv.GLOBAL_LOCAL_ATTENTION_BACKEND;
    const child = spawn(process.execPath, args, { cwd: ROOT, env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, ms: Date.now() - start });
    });
  });
}

/**
 * The CUDA plugin's kernels compiled for the CPU (ctest's cuda_emulated target, built by `npm test`
 * into build-tests/), which lets the cuda backend run here through its real loader and plugin ABI;
 * null where it is not built. Point GLA_CUDA_PLUGIN at it to get 'cuda' in backends().
 */
export const EMULATED_CUDA_PLUGIN: string | null = (() => {
  const file = path.join(ROOT, 'build-tests', process.platform === 'darwin' ? 'libgla_cuda_emulated.dylib' : 'libgla_cuda_emulated.so');
  return fs.existsSync(file) ? file : null;
})();

/** The root of the package under test: the fixtures load `${PACKAGE_ROOT}/dist/index.js`. */
export const PACKAGE_ROOT = ROOT;
