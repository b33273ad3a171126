#!/usr/bin/env node
// npm's install step: build the native addon with cmake-js when a toolchain is present.
// It never fails the install: without CMake or a compiler the pure-JS backend serves, and the
// reason is written to build/native-status.json so the library's one warning can say why.
'use strict';

const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const statusFile = path.join(root, 'build', 'native-status.json');

function record(status) {
  fs.mkdirSync(path.dirname(statusFile), { recursive: true });
  fs.writeFileSync(statusFile, JSON.stringify({ ...status, date: new Date().toISOString() }, null, 2) + '\n');
}

function giveUp(reason) {
  record({ ok: false, reason });
  console.warn(
    `global-local-attention: native addon not built (${reason}).\n` +
      '  The pure-JS backend will be used. To get the native backends, install CMake (>= 3.18) and a\n' +
      '  C++17 compiler, then run `npm rebuild global-local-attention`.',
  );
  process.exit(0);
}

if (process.env.GLOBAL_LOCAL_ATTENTION_SKIP_BUILD) giveUp('GLOBAL_LOCAL_ATTENTION_SKIP_BUILD is set');

const cmake = spawnSync('cmake', ['--version'], { encoding: 'utf8' });
if (cmake.error || cmake.status !== 0) giveUp('cmake was not found on PATH');

let cmakeJs;
try {
  cmakeJs = require.resolve('cmake-js/bin/cmake-js', { paths: [root] });
} catch {
  giveUp('the cmake-js package is missing');
}

const args = [cmakeJs, 'rebuild', '--directory', root];
// Extra CMake settings, e.g. GLOBAL_LOCAL_ATTENTION_CMAKE_ARGS="-DGLA_CUDA=OFF".
for (const extra of (process.env.GLOBAL_LOCAL_ATTENTION_CMAKE_ARGS || '').split(/\s+/).filter(Boolean)) {
  args.push(extra.startsWith('-D') ? `--C${extra.slice(1)}` : extra);
}
const build = spawnSync(process.execPath, args, { cwd: root, stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8' });
process.stdout.write(build.stdout || '');
if (build.error || build.status !== 0) {
  const tail = `${build.stdout || ''}${build.stderr || ''}`.trim().split('\n').slice(-15).join('\n');
  console.warn(tail);
  giveUp(`the CMake build failed (exit ${build.status ?? build.error})`);
}
record({ ok: true });
