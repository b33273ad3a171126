// The README's examples are a contract: every ```js block runs as written (with the package name
// pointing at this checkout) and prints what the README says it prints.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT, gla } from './helpers/package';

const README = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
const BLOCKS = [...README.matchAll(/```js\n([\s\S]*?)```/g)].map((m) => m[1]);

/** The one block that contains `marker`. */
function block(marker: string): string {
  const found = BLOCKS.filter((b) => b.includes(marker));
  expect(found, `README js blocks containing ${marker}`).toHaveLength(1);
  return found[0];
}

function run(source: string): { status: number | null; stdout: string; stderr: string } {
  const code = source.replaceAll("require('global-local-attention')", `require(${JSON.stringify(ROOT)})`);
  const env = { ...process.env };
  delete env.GLOBAL_LOCAL_ATTENTION_BACKEND;
  const r = spawnSync(process.execPath, ['-e', code], { cwd: ROOT, env, encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('the README examples', () => {
  it('has the examples this test knows', () => {
    expect(BLOCKS).toHaveLength(11);
  });

  it('the quick start prints the backends and the result length', () => {
    const r = run(BLOCKS[0]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/'js' \]/);
    expect(r.stdout).toMatch(/^524288$/m);
  });

  it('the onnxruntime-node interop passes tensor.data in bshd, and a Tensor itself is a TypeError', () => {
    const source = block("new ort.Tensor('float32', out, q.dims)");
    const r = run(source);
    expect(r.status, r.stderr).toBe(0);
    // The two `// ...` comments after the console.log calls are the lines they print.
    expect(r.stdout.trim().split('\n')).toEqual(['1×6×32 float32', "TypeError for a Tensor pass its .data (q.data) with layout 'bshd' for [batch, seq, heads·headDim] dims"]);
  });

  it('resolveBackend and backendReport say which backend runs and where each came from', () => {
    const r = run(block('resolveBackend({ backend: \'js\' })'));
    expect(r.status, r.stderr).toBe(0);
    const lines = r.stdout.trim().split('\n');
    const report = gla.backendReport();
    expect(lines).toEqual([
      gla.backends()[0], 'js',
      ...report.map((s) => `${s.name}: ${s.available ? s.origin : `unavailable (${s.reason})`}`),
    ]);
  });

  it('the bfloat16 KV cache decodes token by token', () => {
    const r = run(block("dtype: 'bfloat16'"));
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^Uint16Array 512 -?\d\.\d{3}$/m);
  });

  it('the shared-memory decode loop runs', () => {
    const r = run(block('last step, first value'));
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^last step, first value: -?\d/m);
  });

  it('the serving batches see what the README says each sequence sees', () => {
    const source = block("qLengths: [8, 3]");
    const r = run(source);
    expect(r.status, r.stderr).toBe(0);
    // Every `// line` comment that follows a console.log is the line it prints.
    const shown = [...source.matchAll(/^\/\/ ((?:decode|prompt 2):.*)$/gm)].map((m) => m[1]);
    expect(shown).toHaveLength(2);
    expect(r.stdout.trim().split('\n')).toEqual(shown);
  });

  it('a sink takes exp(sink - lse) of the weight', () => {
    const r = run(block('sinkLogits, lse'));
    expect(r.status, r.stderr).toBe(0);
    const m = /^total weight (\d\.\d{4}) = 1 - exp\(sink - lse\) (\d\.\d{4})$/m.exec(r.stdout);
    expect(m, r.stdout).not.toBeNull();
    expect(m?.[1]).toBe(m?.[2]);
  });

  it('the paged cache reads the pages the block table names', () => {
    const r = run(block('blockTable, pageSize, kvLengths: [7, 10]'));
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^paged matches contiguous: true$/m);
  });

  it('packed sequences match separate calls', () => {
    const r = run(block('cuSeqlensQ: cuSeqlens'));
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^packed matches separate calls: true$/m);
  });

  it('merging two halves of the keys matches one call', () => {
    const r = run(block('mergeAttentionStatesSync'));
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^merged matches one call: true$/m);
  });

  it('giving out away mid-call rejects with the message the README shows', () => {
    const source = block('options.out was detached');
    const r = run(source);
    expect(r.status, r.stderr).toBe(0);
    const shown = /\/\/ (options\.out was detached .*)$/m.exec(source)?.[1];
    expect(shown).toBeDefined();
    expect(r.stdout.trim()).toBe(shown);
  });
});
