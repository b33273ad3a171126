// The package as a registry would serve it: the prebuild staged (what `npm pack`'s prepack does),
// the tarball packed, then installed into fresh projects: one with no CMake, compiler or CUDA on
// PATH (the prebuild must serve), one with npm_config_build_from_source=true (it must compile), and
// a copy whose prebuild is corrupted (install and import must still work, on the JS backend, with
// the one warning that says why). The prebuilt binary is disassembled: no AVX, AVX-512 or BMI
// instruction outside the per-ISA kernels, so it runs on any x86-64.
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROOT, gla } from './helpers/package';

const NPM = process.platform === 'win32' ? 'npm.cmd' : 'npm';
const HAS_CMAKE = !spawnSync('cmake', ['--version']).error;
const HAS_OBJDUMP = !spawnSync('objdump', ['--version']).error;
/** Where scripts/prebuild.js stages a binary, when this platform gets one. */
const PREBUILD = process.platform === 'linux' && !fs.existsSync('/etc/alpine-release')
  ? `prebuilds/linux-${os.arch()}/node.napi.glibc.node` : null;
const TARBALL_LIMIT = 2 * 1024 * 1024;

interface Install { status: number | null; output: string; seconds: number }

/** A directory holding only node, npm and sh (npm's script shell): no CMake, compiler or CUDA toolkit. */
function bareBin(dir: string): string {
  const bin = path.join(dir, 'bare-bin');
  fs.mkdirSync(bin);
  fs.symlinkSync(process.execPath, path.join(bin, 'node'));
  fs.symlinkSync('/bin/sh', path.join(bin, 'sh'));
  const npmCli = fs.realpathSync(execFileSync('sh', ['-c', `command -v ${NPM}`], { encoding: 'utf8' }).trim());
  fs.symlinkSync(npmCli, path.join(bin, 'npm'));
  return bin;
}

function newProject(dir: string, name: string): string {
  const project = path.join(dir, name);
  fs.mkdirSync(project);
  fs.writeFileSync(path.join(project, 'package.json'), JSON.stringify({ name, version: '1.0.0', private: true }));
  return project;
}

function install(project: string, tarball: string, env: NodeJS.ProcessEnv): Install {
  const started = Date.now();
  // --foreground-scripts: npm shows a dependency's install output only then (or on failure).
  const r = spawnSync(NPM, ['install', '--no-audit', '--no-fund', '--prefer-offline', '--foreground-scripts', tarball], { cwd: project, env, encoding: 'utf8' });
  return { status: r.status, output: `${r.stdout}${r.stderr}`, seconds: (Date.now() - started) / 1000 };
}

function consumer(project: string, args: string[], env: NodeJS.ProcessEnv = process.env) {
  const clean = { ...env };
  delete clean.GLOBAL_LOCAL_ATTENTION_BACKEND;
  return spawnSync(process.execPath, args, { cwd: project, env: clean, encoding: 'utf8', timeout: 60_000 });
}

const CALL = `const n = 2 * 16 * 8;
  const q = new Float32Array(n).fill(0.5), k = new Float32Array(n).fill(0.25), v = new Float32Array(n).fill(1);
  const out = g.localGlobalAttentionSync(q, k, v, { batch: 1, heads: 2, seqLen: 16, headDim: 8, window: [2, 2] });`;
const REPORT = `const g = require('global-local-attention'); ${CALL}
  console.log(JSON.stringify({ backends: g.backends(), report: g.backendReport(), first: out[0] }));`;

describe('the packed tarball', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gla-pack-'));
  const bare = path.join(dir, 'bare');
  const fromSource = path.join(dir, 'from-source');
  let tarball = '';
  let packedBytes = 0;
  let files: string[] = [];
  let prebuildLog = '';
  let bareInstall: Install = { status: null, output: '', seconds: 0 };
  let sourceInstall: Install = { status: null, output: '', seconds: 0 };
  let bareEnv: NodeJS.ProcessEnv = {};

  beforeAll(() => {
    try {
      // What prepack does. The packing itself runs with --ignore-scripts: `prepare` would rebuild
      // dist/ under the suites running beside this one (dist/ is built already: pretest).
      const staged = spawnSync(process.execPath, [path.join(ROOT, 'scripts', 'prebuild.js')], { cwd: ROOT, encoding: 'utf8' });
      prebuildLog = `${staged.stdout}${staged.stderr}`;
      const packed = execFileSync(NPM, ['pack', '--ignore-scripts', '--json', '--pack-destination', dir], { cwd: ROOT, encoding: 'utf8' });
      const [info] = JSON.parse(packed) as Array<{ filename: string; size: number; files: Array<{ path: string }> }>;
      tarball = path.join(dir, info.filename);
      packedBytes = fs.statSync(tarball).size;
      files = info.files.map((f) => f.path);
    } finally {
      // What postpack does: the tree keeps no prebuild that would stand in for its own sources.
      fs.rmSync(path.join(ROOT, 'prebuilds'), { recursive: true, force: true });
    }

    bareEnv = { ...process.env, PATH: bareBin(dir) };
    delete bareEnv.GLOBAL_LOCAL_ATTENTION_BACKEND;
    newProject(dir, 'bare');
    bareInstall = install(bare, tarball, bareEnv);

    newProject(dir, 'from-source');
    if (HAS_CMAKE) {
      const env: NodeJS.ProcessEnv = { ...process.env, npm_config_build_from_source: 'true', GLOBAL_LOCAL_ATTENTION_CMAKE_ARGS: '-DGLA_CUDA=OFF' };
      delete env.GLOBAL_LOCAL_ATTENTION_BACKEND;
      sourceInstall = install(fromSource, tarball, env);
    }
    console.log(`packaging: tarball ${(packedBytes / 1024).toFixed(0)} KiB; install without a toolchain ${bareInstall.seconds.toFixed(1)} s` +
      (HAS_CMAKE ? `, with npm_config_build_from_source ${sourceInstall.seconds.toFixed(1)} s` : ''));
  }, 600_000);
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('ships the entry points, declarations, native sources and the prebuild, and no tests, caches or reports', () => {
    for (const needed of ['dist/index.js', 'dist/index.mjs', 'dist/index.d.ts', 'binding.d.ts', 'CMakeLists.txt', 'scripts/install.js', 'native/addon/addon.cc', 'LICENSE', 'README.md']) {
      expect(files).toContain(needed);
    }
    if (PREBUILD !== null && HAS_CMAKE) expect(files, prebuildLog).toContain(PREBUILD);
    const unwanted = files.filter((f) => /(^|\/)(test|tests|bench)\/|__pycache__|\.pyc$|report|build-/.test(f));
    expect(unwanted).toEqual([]);
  });

  it('packs under 2 MiB', () => {
    expect(packedBytes).toBeGreaterThan(0);
    expect(packedBytes).toBeLessThan(TARBALL_LIMIT);
  });

  it('the prebuilt binary has no AVX, AVX-512 or BMI instruction outside the per-ISA kernels', () => {
    if (PREBUILD === null || !HAS_CMAKE || !HAS_OBJDUMP || os.arch() !== 'x64') return;
    // The staged files are stripped copies of build-prebuild/'s: the same code (compared below),
    // the latter with the symbols that say which function each instruction belongs to.
    const pairs: Array<[string, string]> = [[path.join(bare, 'node_modules', 'global-local-attention', PREBUILD), path.join(ROOT, 'build-prebuild', 'Release', 'global_local_attention.node')]];
    const plugin = path.join(path.dirname(pairs[0][0]), 'libgla_cuda.so');
    if (fs.existsSync(plugin)) pairs.push([plugin, path.join(ROOT, 'build-prebuild', 'Release', 'libgla_cuda.so')]);
    for (const [shipped, built] of pairs) {
      expect(textSection(shipped).equals(textSection(built)), `${shipped} is not ${built}'s code`).toBe(true);
      const { outside, kernelVectorInstructions } = instructionsOutsideKernels(built);
      expect(outside, `${path.basename(built)}: functions outside gla::cpu::avx2/avx512 that need a newer CPU`).toEqual({});
      if (path.basename(built).endsWith('.node')) expect(kernelVectorInstructions).toBeGreaterThan(1000);
    }
  });

  it('installs with no CMake, compiler or CUDA on PATH, from the prebuild, and says so in one line', () => {
    expect(bareInstall.status, bareInstall.output).toBe(0);
    if (PREBUILD === null || !HAS_CMAKE) return;
    const lines = bareInstall.output.split('\n').filter((l) => l.startsWith('global-local-attention:'));
    expect(lines).toEqual([expect.stringMatching(new RegExp(`^global-local-attention: using the prebuilt native addon ${PREBUILD.replaceAll('.', '\\.')} \\(kernels: `))]);
  });

  it('the prebuild serves every CPU backend this machine has, and backendReport() says it is prebuilt', () => {
    const r = consumer(bare, ['-e', REPORT], bareEnv);
    expect(r.status, r.stderr).toBe(0);
    const { backends, report, first } = JSON.parse(r.stdout) as { backends: string[]; report: Array<{ name: string; origin: string | null }>; first: number };
    expect(first).toBe(1);
    expect(backends.at(-1)).toBe('js');
    if (PREBUILD === null || !HAS_CMAKE) return;
    // The same kernels as the addon this checkout built (cuda aside: it needs a GPU).
    expect(backends.filter((b) => b !== 'cuda')).toEqual(gla.backends().filter((b) => b !== 'cuda'));
    for (const status of report.filter((s) => s.name !== 'js' && s.name !== 'cuda')) {
      if (backends.includes(status.name)) expect(status.origin).toBe(`prebuilt (${PREBUILD})`);
    }
    expect(r.stderr).toBe('');
  });

  it('npm_config_build_from_source=true compiles instead, and backendReport() says it was built here', () => {
    if (!HAS_CMAKE) return;
    expect(sourceInstall.status, sourceInstall.output).toBe(0);
    expect(sourceInstall.output).toMatch(/global-local-attention: compiled the native addon from source into build\/Release\/global_local_attention\.node in \d+ s \(npm_config_build_from_source is set\)/);
    const r = consumer(fromSource, ['-e', REPORT]);
    expect(r.status, r.stderr).toBe(0);
    const { report } = JSON.parse(r.stdout) as { report: Array<{ name: string; available: boolean; origin: string | null }> };
    expect(report.find((s) => s.name === 'scalar')).toMatchObject({ available: true, origin: 'built here (build/Release/global_local_attention.node)' });
  });

  it('a corrupted prebuild breaks neither install nor import: the JS backend serves, with one warning saying why', () => {
    if (PREBUILD === null || !HAS_CMAKE) return;
    // A copy of the installed package inside the project (so its dependencies resolve), with the
    // prebuild overwritten: the install script must survive it, then the library too.
    const copy = path.join(bare, 'corrupt-copy');
    fs.cpSync(path.join(bare, 'node_modules', 'global-local-attention'), copy, { recursive: true });
    fs.rmSync(path.join(copy, 'build'), { recursive: true, force: true });
    fs.writeFileSync(path.join(copy, PREBUILD), Buffer.alloc(4096, 0x5a));
    const installed = spawnSync(process.execPath, [path.join(copy, 'scripts', 'install.js')], { cwd: copy, env: bareEnv, encoding: 'utf8' });
    expect(installed.status, installed.stderr).toBe(0);
    expect(installed.stderr).toMatch(/native addon not available \(the prebuild did not load \(.*\), and cmake was not found on PATH\)/);
    const status = JSON.parse(fs.readFileSync(path.join(copy, 'build', 'native-status.json'), 'utf8')) as { ok: boolean };
    expect(status.ok).toBe(false);
    const r = consumer(bare, ['-e', `const g = require('./corrupt-copy'); ${CALL} console.log(JSON.stringify({ backends: g.backends(), first: out[0] }));`], bareEnv);
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ backends: ['js'], first: 1 });
    expect(r.stderr.match(/GLA_NATIVE_UNAVAILABLE/g) ?? []).toHaveLength(1);
    expect(r.stderr).toMatch(/the native addon prebuilds\/.*failed to load: .*so global-local-attention is running on its pure-JavaScript backend/);
  });

  it('import works, named and default', () => {
    const r = consumer(bare, ['--input-type=module', '-e', `import * as g from 'global-local-attention'; import gla from 'global-local-attention'; ${CALL} console.log(out.length, gla.backends === g.backends);`], bareEnv);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout.trim()).toBe('256 true');
  });

  it('a TypeScript file type-checks against the installed declarations', () => {
    fs.writeFileSync(path.join(bare, 'use.ts'), `import gla, { fullAttention, localGlobalAttentionSync, backends, resolveBackend, type LocalGlobalAttentionOptions } from 'global-local-attention';
const viaDefault: string[] = gla.backends();
const q = new Float32Array(2 * 16 * 8);
const options = { batch: 1, heads: 2, seqLen: 16, headDim: 8, window: [2, 2], layout: 'bshd' } satisfies LocalGlobalAttentionOptions;
const out: Float32Array = localGlobalAttentionSync(q, q, q, options);
const later: Promise<Float32Array> = fullAttention(q, q, q, { batch: 1, heads: 2, seqLen: 16, headDim: 8 });
const names: string[] = backends();
const chosen: string = resolveBackend({ backend: 'auto' });
export { out, later, names, viaDefault, chosen };
`);
    const tsc = path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
    const r = consumer(bare, [tsc, '--noEmit', '--strict', '--module', 'nodenext', '--moduleResolution', 'nodenext', '--target', 'es2022', 'use.ts']);
    expect(`${r.stdout}${r.stderr}`).toBe('');
    expect(r.status).toBe(0);
  });
});

/** The bytes of a binary's .text section. */
function textSection(file: string): Buffer {
  const out = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'gla-text-')), 'text.bin');
  execFileSync('objcopy', ['-O', 'binary', '--only-section=.text', file, out]);
  const bytes = fs.readFileSync(out);
  fs.rmSync(path.dirname(out), { recursive: true, force: true });
  return bytes;
}

// VEX/EVEX-encoded instructions (every AVX, AVX2, FMA, F16C and AVX-512 one starts with v), 256-
// and 512-bit registers, AVX-512 mask registers, and the BMI/LZCNT/MOVBE/POPCNT scalar ones that
// -march=native would also let the compiler use.
const NEWER_THAN_SSE2 = /^(v(?!err|erw)[a-z0-9]+|andn|bextr|blsi|blsmsk|blsr|bzhi|mulx|pdep|pext|rorx|sarx|shlx|shrx|lzcnt|tzcnt|movbe|popcnt)$/;
const WIDE_REGISTER = /%([yz]mm\d+|k[0-7])\b/;
const KERNEL_FUNCTION = /gla::cpu::(avx2|avx512)::/;

/** Per function outside the per-ISA kernel namespaces, the instructions an SSE2-only CPU lacks. */
function instructionsOutsideKernels(file: string): { outside: Record<string, string[]>; kernelVectorInstructions: number } {
  const listing = execFileSync('objdump', ['-d', '-C', '--no-show-raw-insn', file], { encoding: 'utf8', maxBuffer: 1 << 30 });
  const outside: Record<string, Set<string>> = {};
  let kernelVectorInstructions = 0;
  let fn = '';
  for (const line of listing.split('\n')) {
    const header = /^[0-9a-f]+ <(.*)>:$/.exec(line);
    if (header !== null) {
      fn = header[1];
      continue;
    }
    // "  addr:\tmnemonic operands  # comment": the comment may name symbols, so it is dropped.
    const fields = line.split('\t');
    if (fields.length < 2) continue;
    const instruction = fields[1].split('#')[0].trim();
    const mnemonic = instruction.split(/\s+/)[0];
    if (!NEWER_THAN_SSE2.test(mnemonic) && !WIDE_REGISTER.test(instruction)) continue;
    if (KERNEL_FUNCTION.test(fn)) kernelVectorInstructions++;
    else (outside[fn] ??= new Set()).add(mnemonic);
  }
  return { outside: Object.fromEntries(Object.entries(outside).map(([k, v]) => [k, [...v].sort()])), kernelVectorInstructions };
}
