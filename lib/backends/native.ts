// The native addon: loaded on first use, never at require time, so that a missing or broken build
// costs nothing until a call needs it and then becomes a reason instead of an exception.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { NativeBinding, NativeIsa, NativeProblemFieldNames, NativeProblemFields } from '../../binding';
import type { AttentionProblem } from '../problem';
import type { AttentionBuffers, BackendImpl } from './backend';

type BindingsLoader = (options: { bindings: string; module_root: string }) => unknown;

interface LoadResult {
  binding: NativeBinding | null;
  /** Why the addon could not be loaded; null when it loaded. */
  failure: string | null;
}

let loaded: LoadResult | undefined;

// dist/backends/native.js -> the package root. bindings would otherwise guess the root from the
// stack, which breaks under bundlers and when the calling file is not inside the package.
const PACKAGE_ROOT = path.join(__dirname, '..', '..');
const ADDON_NAME = 'global_local_attention';

function loadAddon(): LoadResult {
  if (loaded === undefined) {
    try {
      const bindings = require('bindings') as BindingsLoader;
      const binding = bindings({ bindings: ADDON_NAME, module_root: PACKAGE_ROOT }) as NativeBinding;
      loaded = { binding, failure: null };
    } catch (error) {
      loaded = { binding: null, failure: describeLoadFailure(error) };
    }
  }
  return loaded;
}

function describeLoadFailure(error: unknown): string {
  // bindings lists a dozen candidate paths when the file is simply absent; one line says it better,
  // and scripts/install.js has recorded why the build did not happen.
  if (error instanceof Error && Array.isArray((error as { tries?: unknown }).tries)) {
    const why = installFailure();
    return why === null
      ? `the native addon is not built (no build/Release/${ADDON_NAME}.node under ${PACKAGE_ROOT})`
      : `the native addon is not built (${why})`;
  }
  const message = error instanceof Error ? error.message : String(error);
  return `the native addon failed to load: ${message.split('\n')[0]}`;
}

/** The reason scripts/install.js wrote to build/native-status.json when it gave up, if it did. */
function installFailure(): string | null {
  try {
    const status = JSON.parse(fs.readFileSync(path.join(PACKAGE_ROOT, 'build', 'native-status.json'), 'utf8')) as unknown;
    if (typeof status === 'object' && status !== null) {
      const { ok, reason } = status as { ok?: unknown; reason?: unknown };
      if (ok === false && typeof reason === 'string' && reason !== '') return reason;
    }
  } catch {
    // No status file (built by hand, or install never ran): nothing more to say.
  }
  return null;
}

/** Why the addon could not be loaded, or null when it is loaded. Loads it on first call. */
export function nativeLoadFailure(): string | null {
  return loadAddon().failure;
}

function requireBinding(): NativeBinding {
  const { binding, failure } = loadAddon();
  if (binding === null) throw new Error(failure ?? 'the native addon is not loaded');
  return binding;
}

/**
 * The problem crosses into the addon as one Float64Array in this order (binding.d.ts,
 * NativeProblemFieldNames; native/addon/problem_reader.h, ProblemField), plus the three optional
 * Int32Arrays as separate arguments. Entry 0 is the layout version, which the addon checks: bump it
 * here and in problem_reader.h (kProblemLayoutVersion) whenever the order or meaning changes.
 */
export const NATIVE_PROBLEM_LAYOUT_VERSION = 1;
export const NATIVE_PROBLEM_FIELDS: NativeProblemFieldNames = [
  'layoutVersion',
  'batch', 'heads', 'kvHeads', 'seqLen', 'kvSeqLen', 'headDim',
  'qStrides.batch', 'qStrides.head', 'qStrides.seq',
  'kStrides.batch', 'kStrides.head', 'kStrides.seq',
  'vStrides.batch', 'vStrides.head', 'vStrides.seq',
  'outStrides.batch', 'outStrides.head', 'outStrides.seq',
  'scale', 'causal', 'windowLeft', 'windowRight', 'threads',
];

// One per module instance (so one per worker thread). Reusing it is safe: the addon copies every
// field out before attentionSync / attentionAsync returns, and no JS runs between filling it and
// the call. A fresh Float64Array per call would cost an allocation on the tiny-call path.
const fieldsScratch: NativeProblemFields = new Float64Array(NATIVE_PROBLEM_FIELDS.length);

/** Packs `p` into the shared fields array, in NATIVE_PROBLEM_FIELDS order (index by index). */
export function encodeNativeProblem(p: AttentionProblem): NativeProblemFields {
  const f = fieldsScratch;
  f[0] = NATIVE_PROBLEM_LAYOUT_VERSION;
  f[1] = p.batch;
  f[2] = p.heads;
  f[3] = p.kvHeads;
  f[4] = p.seqLen;
  f[5] = p.kvSeqLen;
  f[6] = p.headDim;
  const qs = p.qStrides;
  f[7] = qs.batch;
  f[8] = qs.head;
  f[9] = qs.seq;
  const ks = p.kStrides;
  f[10] = ks.batch;
  f[11] = ks.head;
  f[12] = ks.seq;
  const vs = p.vStrides;
  f[13] = vs.batch;
  f[14] = vs.head;
  f[15] = vs.seq;
  const os = p.outStrides;
  f[16] = os.batch;
  f[17] = os.head;
  f[18] = os.seq;
  f[19] = p.scale;
  f[20] = p.causal ? 1 : 0;
  f[21] = p.windowLeft;
  f[22] = p.windowRight;
  f[23] = p.threads;
  return f;
}

const ISA_FEATURES: Record<NativeIsa, string> = {
  avx512: 'AVX-512F',
  avx2: 'AVX2 and FMA',
  scalar: 'the portable scalar kernels',
};

/** One CPU kernel set of the addon (avx512, avx2 or scalar). */
export function cpuBackend(isa: NativeIsa): BackendImpl {
  return {
    name: isa,
    probe() {
      const { binding, failure } = loadAddon();
      if (binding === null) return failure;
      let isas: readonly string[];
      try {
        isas = binding.isas();
      } catch (error) {
        return `the native addon could not list its kernels: ${errorMessage(error)}`;
      }
      if (isas.includes(isa)) return null;
      return `this CPU or operating system does not support ${ISA_FEATURES[isa]}`;
    },
    runSync(p, b: AttentionBuffers) {
      const binding = requireBinding();
      return binding.attentionSync(b.q, b.k, b.v, b.out, b.lse, encodeNativeProblem(p), p.kvLengths, p.globalOffsets, p.globalIndices, isa);
    },
    runAsync(p, b: AttentionBuffers) {
      const binding = requireBinding();
      return binding.attentionAsync(b.q, b.k, b.v, b.out, b.lse, encodeNativeProblem(p), p.kvLengths, p.globalOffsets, p.globalIndices, isa);
    },
  };
}

/** The CUDA plugin, reached through the addon. */
export function cudaBackend(): BackendImpl {
  return {
    name: 'cuda',
    probe() {
      const { binding, failure } = loadAddon();
      if (binding === null) return failure;
      // Builds that predate the CUDA plugin do not export the probe at all.
      if (typeof binding.cudaUnavailableReason !== 'function') {
        return 'this build of the native addon has no CUDA support';
      }
      try {
        return binding.cudaUnavailableReason();
      } catch (error) {
        return `the CUDA probe failed: ${errorMessage(error)}`;
      }
    },
    runSync(p, b: AttentionBuffers) {
      const binding = requireBinding();
      return binding.cudaAttentionSync(b.q, b.k, b.v, b.out, b.lse, encodeNativeProblem(p), p.kvLengths, p.globalOffsets, p.globalIndices);
    },
    runAsync(p, b: AttentionBuffers) {
      const binding = requireBinding();
      return binding.cudaAttentionAsync(b.q, b.k, b.v, b.out, b.lse, encodeNativeProblem(p), p.kvLengths, p.globalOffsets, p.globalIndices);
    },
  };
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
