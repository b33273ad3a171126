// The package as a registry would serve it: `npm pack`, then the tarball installed into a fresh
// project (its install script compiling the addon from the shipped sources where CMake and a
// compiler are present), imported with require and with import, and a TypeScript file type-checked
// against its declarations. The tarball holds what a consumer uses and nothing else.
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROOT } from './helpers/package';

const NPM = process.platform === 'win32' ? 'npm.cmd' : 'npm';
const HAS_CMAKE = !spawnSync('cmake', ['--version']).error;

describe('the packed tarball', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gla-pack-'));
  const project = path.join(dir, 'consumer');
  let tarball = '';
  let files: string[] = [];
  let install = { status: 0 as number | null, output: '' };

  beforeAll(() => {
    // --ignore-scripts: `prepare` would rebuild dist/ under the suites running beside this one;
    // dist/ is already built (pretest).
    const packed = execFileSync(NPM, ['pack', '--ignore-scripts', '--json', '--pack-destination', dir], { cwd: ROOT, encoding: 'utf8' });
    const [info] = JSON.parse(packed) as Array<{ filename: string; files: Array<{ path: string }> }>;
    tarball = path.join(dir, info.filename);
    files = info.files.map((f) => f.path);
    fs.mkdirSync(project);
    fs.writeFileSync(path.join(project, 'package.json'), JSON.stringify({ name: 'consumer', version: '1.0.0', private: true }));
    const env: NodeJS.ProcessEnv = { ...process.env, GLOBAL_LOCAL_ATTENTION_CMAKE_ARGS: '-DGLA_CUDA=OFF' };
    delete env.GLOBAL_LOCAL_ATTENTION_BACKEND;
    const r = spawnSync(NPM, ['install', '--no-audit', '--no-fund', '--prefer-offline', tarball], { cwd: project, env, encoding: 'utf8' });
    install = { status: r.status, output: `${r.stdout}${r.stderr}` };
  }, 300_000);
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('ships the entry points, declarations and native sources, and no tests, caches or reports', () => {
    for (const needed of ['dist/index.js', 'dist/index.mjs', 'dist/index.d.ts', 'binding.d.ts', 'CMakeLists.txt', 'scripts/install.js', 'native/addon/addon.cc']) {
      expect(files).toContain(needed);
    }
    const unwanted = files.filter((f) => /(^|\/)(test|tests|bench)\/|__pycache__|\.pyc$|report/.test(f));
    expect(unwanted).toEqual([]);
  });

  it('installs into a fresh project', () => {
    expect(install.status, install.output).toBe(0);
  });

  const consumer = (args: string[]) => {
    const env = { ...process.env };
    delete env.GLOBAL_LOCAL_ATTENTION_BACKEND;
    return spawnSync(process.execPath, args, { cwd: project, env, encoding: 'utf8', timeout: 60_000 });
  };
  const CALL = `const n = 2 * 16 * 8;
    const q = new Float32Array(n).fill(0.5), k = new Float32Array(n).fill(0.25), v = new Float32Array(n).fill(1);
    const out = g.localGlobalAttentionSync(q, k, v, { batch: 1, heads: 2, seqLen: 16, headDim: 8, window: [2, 2] });`;

  it('require() works and finds the native backends its install built', () => {
    const r = consumer(['-e', `const g = require('global-local-attention'); ${CALL} console.log(JSON.stringify({ backends: g.backends(), first: out[0] }));`]);
    expect(r.status, r.stderr).toBe(0);
    const { backends, first } = JSON.parse(r.stdout) as { backends: string[]; first: number };
    expect(first).toBe(1);
    expect(backends.at(-1)).toBe('js');
    if (HAS_CMAKE) expect(backends).toContain('scalar');
  });

  it('import works, named and default', () => {
    const r = consumer(['--input-type=module', '-e', `import * as g from 'global-local-attention'; import gla from 'global-local-attention'; ${CALL} console.log(out.length, gla.backends === g.backends);`]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout.trim()).toBe('256 true');
  });

  it('a TypeScript file type-checks against the installed declarations', () => {
    fs.writeFileSync(path.join(project, 'use.ts'), `import gla, { fullAttention, localGlobalAttentionSync, backends, type LocalGlobalAttentionOptions } from 'global-local-attention';
const viaDefault: string[] = gla.backends();
const q = new Float32Array(2 * 16 * 8);
const options: LocalGlobalAttentionOptions = { batch: 1, heads: 2, seqLen: 16, headDim: 8, window: [2, 2], layout: 'bshd' };
const out: Float32Array = localGlobalAttentionSync(q, q, q, options);
const later: Promise<Float32Array> = fullAttention(q, q, q, { batch: 1, heads: 2, seqLen: 16, headDim: 8 });
const names: string[] = backends();
export { out, later, names, viaDefault };
`);
    const tsc = path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
    const r = consumer([tsc, '--noEmit', '--strict', '--module', 'nodenext', '--moduleResolution', 'nodenext', '--target', 'es2022', 'use.ts']);
    expect(`${r.stdout}${r.stderr}`).toBe('');
    expect(r.status).toBe(0);
  });
});
