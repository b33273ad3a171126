#!/usr/bin/env node
// `npm pack`'s prepack step: compiles the addon for this platform into build-prebuild/ and stages
// it where node-gyp-build looks for a prebuilt binary, prebuilds/<platform>-<arch>/node.napi.<libc>.node
// (prebuildify's naming: one N-API binary serves every Node >= 20 on this platform and libc), with
// the CUDA plugin beside it when the CUDA toolkit built one (the addon looks for it next to itself).
// `postpack` runs it with --clean, so a clone never keeps a prebuild that would stand in for its
// own sources.
//
// The binary runs on any CPU of the architecture: no global ISA flag reaches the build (CFLAGS and
// CXXFLAGS are cleared; cmake/cpu_kernels.cmake gives ISA flags to the per-ISA kernel objects only,
// and runtime dispatch picks among them). test/packaging.test.ts disassembles it to prove that.
//
// Without CMake or a compiler it stages nothing and says so: the tarball then compiles at install.
'use strict';

const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const prebuilds = path.join(root, 'prebuilds');
const PREFIX = 'global-local-attention prebuild:';

// The CUDA plugin's architectures in the package: sm_80 code serves sm_80/86/89 (same major
// version), sm_90 code serves Hopper, and sm_90's PTX is compiled by the driver for anything newer.
// The build from source keeps its longer list (cmake/cuda.cmake); this one keeps the tarball small.
const PREBUILD_CUDA_ARCHITECTURES = '80-real;90';

/** node-gyp-build's directory and file name for this platform. */
function target() {
  const libc = process.platform === 'linux' ? (fs.existsSync('/etc/alpine-release') ? 'musl' : 'glibc') : null;
  return {
    dir: path.join(prebuilds, `${process.platform}-${os.arch()}`),
    file: libc === null ? 'node.napi.node' : `node.napi.${libc}.node`,
  };
}

function clean() {
  fs.rmSync(prebuilds, { recursive: true, force: true });
}

function skip(reason) {
  console.warn(`${PREFIX} none staged (${reason}); the package will compile the addon where it is installed`);
  process.exit(0);
}

function build() {
  if (process.env.GLOBAL_LOCAL_ATTENTION_SKIP_PREBUILD) skip('GLOBAL_LOCAL_ATTENTION_SKIP_PREBUILD is set');
  const cmake = spawnSync('cmake', ['--version']);
  if (cmake.error || cmake.status !== 0) skip('cmake was not found on PATH');
  const cmakeJs = require.resolve('cmake-js/bin/cmake-js', { paths: [root] });
  const out = path.join(root, 'build-prebuild');
  // build, not rebuild: a second pack reuses the objects. GLA_CUDA is given every time, so that a
  // cached OFF from an earlier configure cannot leave the plugin out of a later pack unnoticed.
  const args = [cmakeJs, 'build', '--directory', root, '--out', out, '--config', 'Release',
    '--CDGLA_CUDA=AUTO', `--CDCMAKE_CUDA_ARCHITECTURES=${PREBUILD_CUDA_ARCHITECTURES}`];
  for (const extra of (process.env.GLOBAL_LOCAL_ATTENTION_CMAKE_ARGS || '').split(/\s+/).filter(Boolean)) {
    args.push(extra.startsWith('-D') ? `--C${extra.slice(1)}` : extra);
  }
  const env = { ...process.env };
  for (const flags of ['CFLAGS', 'CXXFLAGS', 'CUDAFLAGS', 'LDFLAGS']) delete env[flags];
  const started = Date.now();
  const r = spawnSync(process.execPath, args, { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8' });
  if (r.status !== 0) {
    console.warn(`${r.stdout}${r.stderr}`.trim().split('\n').slice(-20).join('\n'));
    skip(`the CMake build failed (exit ${r.status ?? r.error})`);
  }

  clean();
  const { dir, file } = target();
  fs.mkdirSync(dir, { recursive: true });
  const staged = [];
  for (const [from, to] of [['global_local_attention.node', file], ['libgla_cuda.so', 'libgla_cuda.so'], ['libgla_cuda.dylib', 'libgla_cuda.dylib']]) {
    const source = path.join(out, 'Release', from);
    if (!fs.existsSync(source)) continue;
    const dest = path.join(dir, to);
    fs.copyFileSync(source, dest);
    // Symbols are for debugging a build, not for running it: a third of the addon's bytes.
    if (process.platform !== 'win32') spawnSync('strip', ['--strip-unneeded', dest]);
    staged.push(`${path.relative(root, dest)} (${(fs.statSync(dest).size / 1024).toFixed(0)} KiB)`);
  }
  if (staged.length === 0) skip(`the build made no ${path.join(out, 'Release', 'global_local_attention.node')}`);
  console.log(`${PREFIX} staged ${staged.join(', ')}, built in ${Math.round((Date.now() - started) / 1000)} s`);
}

if (process.argv.includes('--clean')) clean();
else build();
