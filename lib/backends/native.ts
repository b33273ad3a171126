// The native addon: loaded on first use, never at require time, so that a missing or broken build
// costs nothing until a call needs it and then becomes a reason instead of an exception.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { NativeBinding, NativeIsa, NativeProblemFields } from '../../binding';
import type { AttentionBuffers, AttentionProblem } from '../problem';
import type { BackendImpl } from './backend';

/** node-gyp-build's resolver: build/Release first (built here), then prebuilds/<platform>-<arch>/. */
type AddonResolver = { path(dir: string): string };

interface LoadResult {
  binding: NativeBinding | null;
  /** Why the addon could not be loaded; null when it loaded. */
  failure: string | null;
  /** Where the loaded addon came from, for backendReport(); null when none loaded. */
  origin: string | null;
}

let loaded: LoadResult | undefined;

// dist/backends/native.js -> the package root, found from this file rather than guessed from the
// caller's stack, which breaks under bundlers and when the calling file is not inside the package.
const PACKAGE_ROOT = path.join(__dirname, '..', '..');
const ADDON_NAME = 'global_local_attention';

function loadAddon(): LoadResult {
  if (loaded === undefined) {
    let file: string;
    try {
      file = (require('node-gyp-build') as AddonResolver).path(PACKAGE_ROOT);
    } catch {
      loaded = { binding: null, failure: notBuiltReason(), origin: null };
      return loaded;
    }
    try {
      const binding = require(file) as NativeBinding;
      // A stale build (no problemFields at all) reads as a mismatch too.
      const mismatch = problemLayoutMismatch(typeof binding.problemFields === 'function' ? binding.problemFields() : null);
      loaded = mismatch === null
        ? { binding, failure: null, origin: originOf(file) }
        : { binding: null, failure: mismatch, origin: null };
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      loaded = { binding: null, failure: `the native addon ${path.relative(PACKAGE_ROOT, file)} failed to load: ${message.split('\n')[0]}`, origin: null };
    }
  }
  return loaded;
}

/** 'prebuilt' for a binary shipped in prebuilds/, 'built here' for one npm install compiled. */
function originOf(file: string): string {
  const relative = path.relative(PACKAGE_ROOT, file).split(path.sep).join('/');
  // Outside the package (GLOBAL_LOCAL_ATTENTION_PREBUILD points elsewhere): the full path says more.
  const shown = relative.startsWith('../') ? file : relative;
  return /(^|\/)prebuilds\//.test(shown) ? `prebuilt (${shown})` : `built here (${shown})`;
}

/** No addon anywhere: scripts/install.js has recorded why, when it ran. */
function notBuiltReason(): string {
  const why = installFailure();
  return why === null
    ? `the native addon is not built (no build/Release/${ADDON_NAME}.node and no prebuild for ${process.platform}-${process.arch} under ${PACKAGE_ROOT})`
    : `the native addon is not built (${why})`;
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

/** Where the loaded addon came from ("prebuilt (...)" or "built here (...)"); null when none loaded. */
export function nativeOrigin(): string | null {
  return loadAddon().origin;
}

function requireBinding(): NativeBinding {
  const { binding, failure } = loadAddon();
  if (binding === null) throw new Error(failure ?? 'the native addon is not loaded');
  return binding;
}

/**
 * The problem crosses into the addon as one Float64Array: the layout version, then these fields of
 * the AttentionProblem (a dotted name is a nested one; booleans travel as 0 or 1), plus the three
 * optional metadata arrays as separate arguments. This list is the JS half of the one field table; the
 * C++ half is GLA_PROBLEM_FIELDS in native/addon/problem_reader.h, and the addon's problemFields()
 * must name exactly these in this order, which loadAddon checks. Adding a field is one name here
 * and one row there; bump the version on both sides when a field changes meaning.
 */
export const NATIVE_PROBLEM_LAYOUT_VERSION = 5;
export const NATIVE_PROBLEM_FIELDS = [
  'dtype', 'outDtype', 'precision',
  'batch', 'heads', 'kvHeads', 'seqLen', 'kvSeqLen', 'headDim',
  'qStrides.batch', 'qStrides.head', 'qStrides.seq',
  'kStrides.batch', 'kStrides.head', 'kStrides.seq',
  'vStrides.batch', 'vStrides.head', 'vStrides.seq',
  'outStrides.batch', 'outStrides.head', 'outStrides.seq',
  'scale', 'causal', 'windowLeft', 'windowRight', 'softcap', 'pageSize', 'maxBlocks', 'pageCount', 'threads',
] as const;

/** What the addon must report from problemFields(): the version, then every name above. */
export const NATIVE_PROBLEM_LAYOUT = { version: NATIVE_PROBLEM_LAYOUT_VERSION, names: ['layoutVersion', ...NATIVE_PROBLEM_FIELDS] };

// One per module instance (so one per worker thread). Reusing it is safe: the addon copies every
// field out before attentionSync / attentionAsync returns, and no JS runs between filling it and
// the call. A fresh Float64Array per call would cost an allocation on the tiny-call path.
const fieldsScratch: NativeProblemFields = new Float64Array(NATIVE_PROBLEM_LAYOUT.names.length);

/**
 * Packs `p` into the shared fields array in NATIVE_PROBLEM_FIELDS order. Compiled once from the
 * list into straight-line assignments (`f[1] = +p.batch; ...`), which is as fast as writing them by
 * hand, and cannot drift from the list.
 */
export const encodeNativeProblem = new Function(
  'f',
  `return function encodeNativeProblem(p) {\n  f[0] = ${NATIVE_PROBLEM_LAYOUT_VERSION};\n${NATIVE_PROBLEM_FIELDS.map((name, i) => `  f[${i + 1}] = +p.${name};`).join('\n')}\n  return f;\n};`,
)(fieldsScratch) as (p: AttentionProblem) => NativeProblemFields;

/** Why this addon's field table is not the one this lib writes, or null when they agree. */
export function problemLayoutMismatch(reported: unknown): string | null {
  const expected = NATIVE_PROBLEM_LAYOUT;
  const r = reported as { version?: unknown; names?: unknown } | null;
  const names = Array.isArray(r?.names) ? (r.names as unknown[]) : null;
  if (r?.version === expected.version && names !== null && names.length === expected.names.length &&
      names.every((name, i) => name === expected.names[i])) {
    return null;
  }
  return `the native addon reads problem fields ${JSON.stringify(r)} but this lib writes ${JSON.stringify(expected)} ` +
    '(lib and native addon are from different builds; rebuild with node scripts/install.js)';
}

const ISA_FEATURES: Record<NativeIsa, string> = {
  avx512: 'AVX-512F',
  avx2: 'AVX2 and FMA',
  neon: 'NEON (the arm64 kernels)',
  scalar: 'the portable scalar kernels',
};

/** One CPU kernel set of the addon (avx512, avx2 or scalar). */
export function cpuBackend(isa: NativeIsa): BackendImpl {
  return {
    name: isa,
    // About 5 µs of kernel on one core: less than the hand-off to a dispatcher thread and back.
    inlineMultiplyAdds: 2 ** 18,
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
    origin: () => nativeOrigin() ?? 'not loaded',
    bfloat16Products() {
      const binding = requireBinding();
      return typeof binding.bfloat16Isas === 'function' && binding.bfloat16Isas().includes(isa);
    },
    runSync(p, b: AttentionBuffers) {
      const binding = requireBinding();
      return binding.attentionSync(b.q, b.k, b.v, b.out, b.lse, encodeNativeProblem(p), p.kvLengths, p.globalOffsets, p.globalIndices, p.qLengths, p.alibiSlopes, p.sinkLogits, p.blockTable, p.qStarts, p.kvStarts, isa);
    },
    runAsync(p, b: AttentionBuffers) {
      const binding = requireBinding();
      return binding.attentionAsync(b.q, b.k, b.v, b.out, b.lse, encodeNativeProblem(p), p.kvLengths, p.globalOffsets, p.globalIndices, p.qLengths, p.alibiSlopes, p.sinkLogits, p.blockTable, p.qStarts, p.kvStarts, isa);
    },
  };
}

/** The CUDA plugin, reached through the addon. */
export function cudaBackend(): BackendImpl {
  return {
    name: 'cuda',
    // Never: a sync GPU call would hold the JS thread for a launch and two copies.
    inlineMultiplyAdds: 0,
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
    // The plugin computes float32 (half inputs are widened on the host) until tensor cores land.
    bfloat16Products: () => false,
    // The plugin is looked for next to the addon unless GLA_CUDA_PLUGIN names one (loader.cpp).
    origin: () => {
      const plugin = process.env.GLA_CUDA_PLUGIN;
      return plugin ? `the plugin GLA_CUDA_PLUGIN names (${plugin})` : `libgla_cuda plugin beside the addon, ${nativeOrigin() ?? 'not loaded'}`;
    },
    runSync(p, b: AttentionBuffers) {
      const binding = requireBinding();
      return binding.cudaAttentionSync(b.q, b.k, b.v, b.out, b.lse, encodeNativeProblem(p), p.kvLengths, p.globalOffsets, p.globalIndices, p.qLengths, p.alibiSlopes, p.sinkLogits, p.blockTable, p.qStarts, p.kvStarts);
    },
    runAsync(p, b: AttentionBuffers) {
      const binding = requireBinding();
      return binding.cudaAttentionAsync(b.q, b.k, b.v, b.out, b.lse, encodeNativeProblem(p), p.kvLengths, p.globalOffsets, p.globalIndices, p.qLengths, p.alibiSlopes, p.sinkLogits, p.blockTable, p.qStarts, p.kvStarts);
    },
  };
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
