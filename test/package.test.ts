// The package as a user meets it: both entry points, the declarations, the fallback warning of a
// machine without the addon, and a process that exits on its own after an async call.
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ROOT } from './helpers/package';

const EXPORTS = [
  'backendReport', 'backends', 'decodeBfloat16', 'decodeFloat16', 'encodeBfloat16', 'encodeFloat16', 'fullAttention',
  'fullAttentionSync', 'localGlobalAttention', 'localGlobalAttentionSync',
  'mergeAttentionStates', 'mergeAttentionStatesSync', 'resolveBackend',
];

/** Runs a script with the current node in `cwd`, without this process's backend override. */
function node(args: string[], cwd = ROOT): { status: number | null; stdout: string; stderr: string } {
  const env = { ...process.env };
  delete env.GLOBAL_LOCAL_ATTENTION_BACKEND;
  const result = spawnSync(process.execPath, args, { cwd, env, encoding: 'utf8', timeout: 30_000 });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

const CALL = `
  const n = 2 * 16 * 8;
  const q = new Float32Array(n).fill(0.5), k = new Float32Array(n).fill(0.25), v = new Float32Array(n).fill(1);
  const options = { batch: 1, heads: 2, seqLen: 16, headDim: 8, window: [2, 2] };
`;

describe('package entry points', () => {
  it('require() of the CommonJS entry exposes the whole API', () => {
    const r = node(['-e', `const m = require(${JSON.stringify(ROOT)}); console.log(JSON.stringify(Object.keys(m).filter(k => k !== '__esModule').sort()))`]);
    expect(r.stderr).toBe('');
    expect(JSON.parse(r.stdout)).toEqual(EXPORTS);
  });

  it('import of the ESM entry exposes the same functions', () => {
    const url = JSON.stringify(`file://${path.join(ROOT, 'dist', 'index.mjs')}`);
    const script = `import * as m from ${url}; import { createRequire } from 'node:module';
      const cjs = createRequire(import.meta.url)(${JSON.stringify(path.join(ROOT, 'dist', 'index.js'))});
      const named = Object.keys(m).filter(k => k !== 'default').sort();
      console.log(JSON.stringify({ names: named, same: named.every(k => m[k] === cjs[k]), defaultIsModule: m.default === cjs }));`;
    const r = node(['--input-type=module', '-e', script]);
    expect(r.stderr).toBe('');
    // The default export is the module object, as TypeScript types a default import of it.
    expect(JSON.parse(r.stdout)).toEqual({ names: EXPORTS, same: true, defaultIsModule: true });
  });

  it('the declarations type-check typical (and reject wrong) usage: tsc on test/', () => {
    const tsc = path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
    let output = '';
    try {
      execFileSync(process.execPath, [tsc, '-p', path.join(ROOT, 'test', 'tsconfig.json')], { encoding: 'utf8' });
    } catch (error) {
      output = String((error as { stdout?: string }).stdout ?? error);
    }
    expect(output).toBe('');
  });

  it('an async call neither keeps the process alive nor lets it exit before the result', () => {
    const script = `${CALL}
      const m = require(${JSON.stringify(ROOT)});
      m.localGlobalAttention(q, k, v, { ...options, backend: 'js' }).then(out => console.log('done', out.length));`;
    const start = Date.now();
    const r = node(['-e', script]);
    expect(r.status).toBe(0);
    expect(r.stdout.trim()).toBe('done 256');
    expect(Date.now() - start).toBeLessThan(20_000);
  });
});

describe('without the native addon', () => {
  // A copy of the built package with no build/ directory: exactly a machine where the addon
  // failed to compile (npm install still succeeds there).
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gla-no-addon-'));
  fs.cpSync(path.join(ROOT, 'dist'), path.join(dir, 'dist'), { recursive: true });
  fs.copyFileSync(path.join(ROOT, 'package.json'), path.join(dir, 'package.json'));
  fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(dir, 'node_modules'), 'dir');
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('falls back to js, explains each skipped backend, and warns once on the first call', () => {
    const script = `${CALL}
      const m = require('./');
      const report = m.backendReport();
      m.localGlobalAttentionSync(q, k, v, options);
      m.localGlobalAttention(q, k, v, options).then(() => {
        m.fullAttentionSync(q, k, v, { batch: 1, heads: 2, seqLen: 16, headDim: 8 });
        console.log(JSON.stringify({ backends: m.backends(), report }));
      });`;
    const r = node(['-e', script], dir);
    expect(r.status).toBe(0);
    const { backends, report } = JSON.parse(r.stdout);
    expect(backends).toEqual(['js']);
    for (const status of report.slice(0, 4)) expect(status.reason).toMatch(/native addon is not built/);
    const warnings = r.stderr.match(/GLA_NATIVE_UNAVAILABLE/g) ?? [];
    expect(warnings).toHaveLength(1);
    expect(r.stderr).toMatch(/install CMake \(≥ 3\.18\) and a C\+\+17 compiler, then run `npm rebuild global-local-attention`/);
  });

  it('a named native backend is an Error that says the addon is missing', () => {
    const script = `${CALL}
      try { require('./').localGlobalAttentionSync(q, k, v, { ...options, backend: 'scalar' }); }
      catch (e) { console.log(e.constructor.name + ': ' + e.message); }`;
    const r = node(['-e', script], dir);
    expect(r.stdout).toMatch(/^Error: backend 'scalar' is not available: the native addon is not built/);
    expect(r.stderr).not.toMatch(/GLA_NATIVE_UNAVAILABLE/); // not a fallback: nothing to warn about
  });

  it('the warning carries the reason the install script recorded', () => {
    fs.mkdirSync(path.join(dir, 'build'), { recursive: true });
    const status = { ok: false, reason: 'cmake was not found on PATH', date: new Date().toISOString() };
    fs.writeFileSync(path.join(dir, 'build', 'native-status.json'), JSON.stringify(status));
    const r = node(['-e', `${CALL} require('./').localGlobalAttentionSync(q, k, v, options);`], dir);
    expect(r.status).toBe(0);
    expect(r.stderr).toMatch(/the native addon is not built \(cmake was not found on PATH\), so global-local-attention is running on its pure-JavaScript backend/);
  });
});
