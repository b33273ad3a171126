// The one field table across the native boundary: the addon's problemFields() (GLA_PROBLEM_FIELDS
// in native/addon/problem_reader.h) must name exactly the fields lib/backends/native.ts writes, in
// the same order, and the encoder must put every field where its name says.
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { BACKENDS, ROOT } from './helpers/package';

const require = createRequire(import.meta.url);
const native = require(path.join(ROOT, 'dist', 'backends', 'native.js')) as typeof import('../dist/backends/native.js');
const { validateCall } = require(path.join(ROOT, 'dist', 'options.js')) as typeof import('../dist/options.js');
const hasAddon = BACKENDS.some((b) => b === 'avx512' || b === 'avx2' || b === 'scalar');

describe('the problem-fields table', () => {
  it.runIf(hasAddon)('the addon reads exactly the fields the lib writes, in order', () => {
    const binding = require(path.join(ROOT, 'build', 'Release', 'global_local_attention.node')) as { problemFields(): unknown };
    expect(binding.problemFields()).toEqual(native.NATIVE_PROBLEM_LAYOUT);
    expect(native.problemLayoutMismatch(binding.problemFields())).toBeNull();
  });

  it('any other version, name or order is a mismatch with a reason', () => {
    const good = native.NATIVE_PROBLEM_LAYOUT;
    const swapped = [...good.names];
    [swapped[1], swapped[2]] = [swapped[2], swapped[1]];
    for (const bad of [
      { ...good, version: good.version + 1 }, { ...good, names: swapped }, { ...good, names: good.names.slice(0, -1) },
      { ...good, names: [...good.names, 'extra'] }, null, {},
    ]) {
      expect(native.problemLayoutMismatch(bad)).toMatch(/different builds/);
    }
  });

  it('the encoder writes every field at its name\'s index', () => {
    const q = new Float32Array(2 * 4 * 3 * 5), k = new Float32Array(2 * 2 * 7 * 5);
    const { problem } = validateCall('localGlobalAttention', q, k, k.slice(), {
      batch: 2, heads: 4, kvHeads: 2, seqLen: 3, kvSeqLen: 7, headDim: 5, layout: 'bshd', causal: true, window: [2, 1], scale: 0.25, threads: 1,
    });
    const fields = native.encodeNativeProblem(problem);
    expect(fields.length).toBe(native.NATIVE_PROBLEM_LAYOUT.names.length);
    expect(fields[0]).toBe(native.NATIVE_PROBLEM_LAYOUT_VERSION);
    native.NATIVE_PROBLEM_FIELDS.forEach((name, i) => {
      const value = name.split('.').reduce<unknown>((o, key) => (o as Record<string, unknown>)[key], problem);
      expect(fields[i + 1], name).toBe(Number(value));
    });
  });
});
