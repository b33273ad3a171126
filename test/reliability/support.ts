// Shared by the reliability suites: deterministic problems with their float64 reference, guards that
// prove no input was written, a timeout that turns a hang into a failure, and an IEEE-aware compare.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { type Kind, inputLengths } from '../helpers/cases';
import { relativeL2 } from '../helpers/compare';
import { type HalfDType, halfUlp, halfValue, toHalfBits } from '../helpers/half-bits';
import { ROOT } from '../helpers/package';
import { randomNonZero, rng } from '../helpers/random';
import { type ReferenceOptions, type ReferenceResult, referenceAttention, tensorIndex } from '../reference';

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

/**
 * Why the emulated-CUDA section of a suite is skipped here ('' when it runs): cuda already runs
 * in-process (a real GPU), the addon is not built, or the emulated plugin is not.
 */
export function emulatedCudaSkip(backends: readonly string[]): string {
  if (backends.includes('cuda')) return ' — skipped: cuda is in backends() here, so the suites above ran it';
  if (!backends.some((b) => b !== 'js')) return ' — skipped: the native addon is not built (or is stale), so no plugin can load';
  if (EMULATED_CUDA_PLUGIN === null) {
    return ' — skipped: the emulated CUDA plugin is not built (cmake --build build-tests --target gla_cuda_emulated)';
  }
  return '';
}

/** A typed array's bytes as base64 and back: how tensors cross to a child process in JSON. */
export const base64Of = (view: ArrayBufferView): string => Buffer.from(view.buffer, view.byteOffset, view.byteLength).toString('base64');
export function bytesOf(base64: string): ArrayBuffer {
  const bytes = Buffer.from(base64, 'base64');
  const copy = new Uint8Array(bytes.length);
  copy.set(bytes);
  return copy.buffer;
}

/** What a child that ran calls on the emulated CUDA plugin answered: one result per call id. */
export interface EmulatedCudaAnswer<R extends { id: string }> {
  /** Why there are no results (the child crashed or timed out); null when it answered. */
  failure: string | null;
  /** The child's backendReport() entry for cuda. */
  report?: { available: boolean; reason: string | null };
  results: Map<string, R>;
}

/** Runs `args` (a fixture and its arguments) with GLA_CUDA_PLUGIN at the emulated plugin. */
export async function runOnEmulatedCuda<R extends { id: string }>(args: string[], timeoutMs: number): Promise<EmulatedCudaAnswer<R>> {
  const r = await runNode(args, timeoutMs, { GLA_CUDA_PLUGIN: EMULATED_CUDA_PLUGIN as string });
  const results = new Map<string, R>();
  if (r.code !== 0 || r.signal !== null) {
    return { failure: `the child process ended with code ${r.code}, signal ${r.signal} after ${r.ms} ms: ${r.stderr.slice(-2000)}`, results };
  }
  const parsed = JSON.parse(r.stdout.trim()) as { report?: { available: boolean; reason: string | null }; results: R[] };
  for (const result of parsed.results) results.set(result.id, result);
  return { failure: null, report: parsed.report, results };
}

/** The root of the package under test: the fixtures load `${PACKAGE_ROOT}/dist/index.js`. */
export const PACKAGE_ROOT = ROOT;

// --- Half precision -------------------------------------------------------------------------------

export type DType = 'float32' | HalfDType;
export type Precision = 'float32' | 'bfloat16';
export const DTYPES: readonly DType[] = ['float32', 'float16', 'bfloat16'];
export const HALF_DTYPES: readonly HalfDType[] = ['float16', 'bfloat16'];
export const PRECISIONS: readonly Precision[] = ['float32', 'bfloat16'];

/** The contract's tolerance per precision: relative L2 of out (and of lse, relative to max(1, |lse|)). */
export const PRECISION_TOLERANCE: Record<Precision, number> = { float32: 2e-5, bfloat16: 1e-2 };

type Float16ArrayConstructor = new (...args: [number] | [ArrayBufferLike, number?, number?]) => ArrayBufferView & ArrayLike<number>;
/** The runtime's Float16Array (Node 24+), or undefined (Node 20): detected, never assumed. */
export const Float16: Float16ArrayConstructor | undefined = (() => {
  const candidate = (globalThis as { Float16Array?: unknown }).Float16Array;
  return typeof candidate === 'function' ? (candidate as Float16ArrayConstructor) : undefined;
})();

/** The internal type name of a typed array ('Float32Array', 'Uint16Array', 'Float16Array'…), or undefined. */
export function typedArrayName(value: unknown): string | undefined {
  if (!ArrayBuffer.isView(value) || value instanceof DataView) return undefined;
  return Object.prototype.toString.call(value).slice(8, -1);
}

// Every pattern's value, from halfValue (test/helpers/half-bits.ts: by formula and DataView,
// independent of lib/half.ts), tabulated once: the fuzz suite decodes a lot.
const HALF_TABLES: Partial<Record<HalfDType, Float32Array>> = {};

/** The values of half bit patterns (halfValues, by table). */
export function decodeHalf(dtype: HalfDType, bits: Uint16Array): Float32Array {
  const table = (HALF_TABLES[dtype] ??= Float32Array.from({ length: 65536 }, (_, b) => halfValue(dtype, b)));
  const values = new Float32Array(bits.length);
  for (let i = 0; i < bits.length; i++) values[i] = table[bits[i]];
  return values;
}

/**
 * toHalfBits (a pattern near each value, by truncation), in integer ops on the float32 bits where
 * the value is a normal float16 (|x| in [2^-14, 65504]; bfloat16 is always the top half).
 */
export function truncatedHalfBits(dtype: HalfDType, values: Float32Array): Uint16Array {
  const words = new Uint32Array(values.buffer, values.byteOffset, values.length);
  const bits = new Uint16Array(values.length);
  for (let i = 0; i < words.length; i++) {
    const w = words[i];
    if (dtype === 'bfloat16') {
      bits[i] = w >>> 16;
      continue;
    }
    const exponent = ((w >>> 23) & 0xff) - 127;
    if (exponent < -14 || exponent > 15) return toHalfBits(dtype, values);
    bits[i] = ((w >>> 16) & 0x8000) | ((exponent + 15) << 10) | ((w >>> 13) & 0x3ff);
  }
  return bits;
}

/**
 * The float32 values a tensor holds: a Float32Array as it is, a Uint16Array's bits decoded as
 * `dtype` (independently of lib/half.ts: see decodeHalf), a Float16Array's numbers.
 */
export function tensorValues(dtype: DType, array: unknown): Float32Array {
  const name = typedArrayName(array);
  if (name === 'Float32Array' && dtype === 'float32') return array as Float32Array;
  if (name === 'Uint16Array' && dtype !== 'float32') return decodeHalf(dtype, array as Uint16Array);
  if (name === 'Float16Array' && dtype === 'float16') return Float32Array.from(array as ArrayLike<number>);
  throw new Error(`a ${name ?? typeof array} cannot hold ${dtype} values`);
}

/**
 * What a call with no `out` must return for `outDtype`: a Float32Array for float32, a Uint16Array of
 * bits for a half type, or a Float16Array for float16 where the runtime has one.
 */
export function expectedResultName(outDtype: DType): string {
  if (outDtype === 'float32') return 'Float32Array';
  return outDtype === 'float16' && Float16 !== undefined ? 'Float16Array' : 'Uint16Array';
}

/**
 * Where a result departs from the float64 reference of the (decoded) inputs, within the tolerance of
 * `precision`: with precision float32, a float32 out within 2e-5 relative L2 and a half out rounded
 * once (each element within half an ulp of the reference plus 2e-5 of its largest value); with
 * bfloat16, 1e-2 relative L2; rows that see no key exact zeros with lse −Infinity in both; lse
 * within the tolerance · max(1, |lse|). `out` holds the result's values (see tensorValues).
 */
export function precisionMismatches(
  options: ReferenceOptions, reference: ReferenceResult, out: Float32Array, lse: Float32Array | null, outDtype: DType, precision: Precision,
): string[] {
  const found: string[] = [];
  const tolerance = PRECISION_TOLERANCE[precision];
  if (out.length !== reference.out.length) return [`out has length ${out.length}, expected ${reference.out.length}`];
  const nan = out.findIndex(Number.isNaN);
  if (nan >= 0) found.push(`out[${nan}] is NaN`);
  if (precision === 'float32' && outDtype !== 'float32') {
    let scale = 0;
    for (const x of reference.out) scale = Math.max(scale, Math.abs(x));
    // Half an ulp at |x| is at least |x|·2^-(mantissa bits + 1): halfUlp only where that is not enough.
    const lowerUlp = outDtype === 'float16' ? 2 ** -11 : 2 ** -8;
    for (let i = 0; i < out.length && found.length < 5; i++) {
      const want = reference.out[i];
      const error = Math.abs(out[i] - want);
      if (error <= Math.abs(want) * lowerUlp * 1.0001 + tolerance * scale) continue;
      const bound = halfUlp(outDtype, want) * 1.0001 + tolerance * scale;
      if (!(error <= bound)) found.push(`out[${i}] is ${out[i]}, expected ${want} ± ${bound} (${outDtype} rounded once)`);
    }
  } else {
    const error = relativeL2(out, reference.out);
    if (!(error <= tolerance)) found.push(`out is ${error} from the reference (relative L2), more than ${tolerance}`);
  }
  const { batch, heads, seqLen, headDim } = options;
  const layout = options.layout ?? 'bhsd';
  for (let b = 0; b < batch; b++) {
    for (let h = 0; h < heads; h++) {
      for (let i = 0; i < seqLen; i++) {
        if (reference.lse[(b * heads + h) * seqLen + i] !== -Infinity) continue;
        for (let d = 0; d < headDim; d++) {
          const x = out[tensorIndex(layout, heads, seqLen, headDim, b, h, i, d)];
          if (x !== 0 && found.length < 5) found.push(`row (b=${b}, h=${h}, i=${i}) sees no key but out[.., d=${d}] = ${x}`);
        }
      }
    }
  }
  if (lse !== null) {
    if (lse.length !== reference.lse.length) found.push(`lse has length ${lse.length}, expected ${reference.lse.length}`);
    for (let r = 0; r < reference.lse.length && found.length < 5; r++) {
      const want = reference.lse[r];
      const ok = want === -Infinity ? lse[r] === -Infinity : Math.abs(lse[r] - want) <= tolerance * Math.max(1, Math.abs(want));
      if (!ok) found.push(`lse[${r}] is ${lse[r]}, expected ${want}`);
    }
  }
  return found;
}
