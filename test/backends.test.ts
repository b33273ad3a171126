// Backend selection: the report, the order, the environment default, and the fallback warning.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { makeInputs } from './helpers/cases';
import { gla } from './helpers/package';

const ALL = ['cuda', 'avx512', 'avx2', 'neon', 'scalar', 'js'];
const SHAPE = { batch: 1, heads: 2, seqLen: 9, headDim: 4 };

describe('backends', () => {
  it('backendReport() lists every backend, best first, with a reason exactly when unavailable', () => {
    const report = gla.backendReport();
    expect(report.map((s) => s.name)).toEqual(ALL);
    for (const status of report) {
      expect(typeof status.available).toBe('boolean');
      if (status.available) expect(status.reason).toBeNull();
      else expect(status.reason).toMatch(/\S/);
    }
    expect(report.at(-1)).toEqual({ name: 'js', available: true, reason: null, bfloat16Products: false, origin: 'pure TypeScript (dist/js/)' });
  });

  it('says where each available backend came from: the addon npm install built, or the prebuild', () => {
    for (const status of gla.backendReport()) {
      if (!status.available) expect(status.origin).toBeNull();
      else if (status.name === 'js') expect(status.origin).toMatch(/TypeScript/);
      // The tests run on the package's own build (build/Release comes first), or on a prebuild.
      else expect(status.origin).toMatch(/^(built here \(build\/Release\/global_local_attention\.node\)|prebuilt \(prebuilds\/[a-z0-9]+-[a-z0-9]+\/node\.napi(\.glibc|\.musl)?\.node\))$|libgla_cuda/);
    }
  });

  it('reports bfloat16 products exactly for avx512 on a CPU with AVX512_BF16 (Linux: /proc/cpuinfo says)', () => {
    const report = gla.backendReport();
    for (const status of report) {
      if (status.name !== 'avx512' || !status.available) expect(status.bfloat16Products).toBe(false);
    }
    const avx512 = report.find((s) => s.name === 'avx512');
    if (process.platform === 'linux' && avx512?.available) {
      const flags = readFileSync('/proc/cpuinfo', 'utf8').match(/^flags\s*:(.*)$/m)?.[1].split(/\s+/) ?? [];
      expect(avx512.bfloat16Products).toBe(flags.includes('avx512_bf16'));
    }
  });

  it('backends() is the available part of the report, in the same order, ending with js', () => {
    const available = gla.backendReport().filter((s) => s.available).map((s) => s.name);
    expect(gla.backends()).toEqual(available);
    expect(gla.backends().at(-1)).toBe('js');
  });

  it('returns a fresh array each time, so callers cannot corrupt the registry', () => {
    const list = gla.backends();
    list.length = 0;
    expect(gla.backends().length).toBeGreaterThan(0);
  });

  it('GLOBAL_LOCAL_ATTENTION_BACKEND sets the default backend, and options.backend overrides it', () => {
    const { q, k, v } = makeInputs('env default', SHAPE);
    const explicit = gla.fullAttentionSync(q, k, v, { ...SHAPE, backend: 'js' });
    const saved = process.env.GLOBAL_LOCAL_ATTENTION_BACKEND;
    try {
      process.env.GLOBAL_LOCAL_ATTENTION_BACKEND = 'js';
      // The JS backend is deterministic, so "ran on js" shows as bit-identical output.
      expect(gla.fullAttentionSync(q, k, v, SHAPE)).toEqual(explicit);
      process.env.GLOBAL_LOCAL_ATTENTION_BACKEND = 'not-a-backend';
      expect(gla.fullAttentionSync(q, k, v, { ...SHAPE, backend: 'js' })).toEqual(explicit);
      process.env.GLOBAL_LOCAL_ATTENTION_BACKEND = '';
      expect(gla.fullAttentionSync(q, k, v, SHAPE)).toHaveLength(explicit.length);
    } finally {
      if (saved === undefined) delete process.env.GLOBAL_LOCAL_ATTENTION_BACKEND;
      else process.env.GLOBAL_LOCAL_ATTENTION_BACKEND = saved;
    }
  });

  it('resolveBackend() says what a call would run on: options.backend, else the variable, else the best', () => {
    const saved = process.env.GLOBAL_LOCAL_ATTENTION_BACKEND;
    try {
      delete process.env.GLOBAL_LOCAL_ATTENTION_BACKEND;
      expect(gla.resolveBackend()).toBe(gla.backends()[0]);
      expect(gla.resolveBackend({})).toBe(gla.backends()[0]);
      expect(gla.resolveBackend({ backend: 'auto' })).toBe(gla.backends()[0]);
      expect(gla.resolveBackend({ backend: 'js' })).toBe('js');
      process.env.GLOBAL_LOCAL_ATTENTION_BACKEND = 'js';
      expect(gla.resolveBackend()).toBe('js');
      expect(gla.resolveBackend({ backend: 'auto' })).toBe(gla.backends()[0]);
      process.env.GLOBAL_LOCAL_ATTENTION_BACKEND = 'not-a-backend';
      expect(() => gla.resolveBackend()).toThrow(/^the environment variable GLOBAL_LOCAL_ATTENTION_BACKEND is "not-a-backend", expected 'auto' or one of/);
    } finally {
      if (saved === undefined) delete process.env.GLOBAL_LOCAL_ATTENTION_BACKEND;
      else process.env.GLOBAL_LOCAL_ATTENTION_BACKEND = saved;
    }
    expect(() => gla.resolveBackend({ backend: 'gpu' as never })).toThrow(RangeError);
    expect(() => gla.resolveBackend({ backend: 'gpu' as never })).toThrow(/^options\.backend is "gpu", expected 'auto' or one of 'cuda'/);
    expect(() => gla.resolveBackend(null as never)).toThrow(TypeError);
    const missing = gla.backendReport().find((s) => !s.available);
    if (missing !== undefined) {
      expect(() => gla.resolveBackend({ backend: missing.name })).toThrow(`backend '${missing.name}' is not available: ${missing.reason}`);
    }
  });

  it("'auto' runs on the first backend of backends()", () => {
    const { q, k, v } = makeInputs('auto', SHAPE);
    const best = gla.backends()[0];
    const auto = gla.fullAttentionSync(q, k, v, { ...SHAPE, backend: 'auto' });
    // Only bit-identical when the same kernel ran: every backend is deterministic for a given input.
    expect(auto).toEqual(gla.fullAttentionSync(q, k, v, { ...SHAPE, backend: best }));
  });
});
