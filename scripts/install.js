#!/usr/bin/env node
// npm's install step. It picks the native addon in this order and never fails the install:
//   1. the prebuilt binary shipped in prebuilds/<platform>-<arch>/ (node-gyp-build's layout), when
//      one matches this platform, arch and libc and loads in a child process;
//   2. otherwise (or with npm_config_build_from_source=true, i.e. `npm install --build-from-source`)
//      a compile with cmake-js, when CMake and a compiler are present;
//   3. otherwise nothing: the pure-JS backend serves, and the reason is written to
//      build/native-status.json so that the library's one warning can say why.
// It prints one line saying which of the three happened.
'use strict';

const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const statusFile = path.join(root, 'build', 'native-status.json');
const builtAddon = path.join(root, 'build', 'Release', 'global_local_attention.node');
const PREFIX = 'global-local-attention:';

function record(status) {
  fs.mkdirSync(path.dirname(statusFile), { recursive: true });
  fs.writeFileSync(statusFile, JSON.stringify({ ...status, date: new Date().toISOString() }, null, 2) + '\n');
}

function relative(file) {
  return path.relative(root, file).split(path.sep).join('/');
}

function giveUp(reason) {
  record({ ok: false, reason });
  console.warn(
    `${PREFIX} native addon not available (${reason}).\n` +
      '  The pure-JS backend will be used. To get the native backends, install CMake (>= 3.18) and a\n' +
      '  C++17 compiler, then run `npm rebuild global-local-attention`.',
  );
  process.exit(0);
}

function truthy(value) {
  return value !== undefined && value !== '' && value !== 'false' && value !== '0';
}

/**
 * The prebuild node-gyp-build would load here, tried in a child process (a binary for another libc
 * or a corrupted file can crash the process that loads it): { file, isas } or { failure }.
 */
function tryPrebuild() {
  let resolver;
  try {
    resolver = require.resolve('node-gyp-build', { paths: [root] });
  } catch {
    return { failure: 'the node-gyp-build package is missing' };
  }
  const probe = `
    const file = require(${JSON.stringify(resolver)}).path(${JSON.stringify(root)});
    const addon = require(file);
    if (typeof addon.problemFields !== 'function') throw new Error('it exports no problemFields()');
    console.log(JSON.stringify({ file, isas: addon.isas() }));`;
  // PREBUILDS_ONLY: look in prebuilds/ only, not at a build/Release left by an earlier compile.
  const child = spawnSync(process.execPath, ['-e', probe], {
    env: { ...process.env, PREBUILDS_ONLY: '1' }, encoding: 'utf8', timeout: 60_000,
  });
  if (child.status === 0) {
    try {
      return JSON.parse(child.stdout.trim().split('\n').pop());
    } catch {
      // fall through: an unreadable answer is a failure like any other
    }
  }
  const why = `${child.stderr || ''}`.split('\n').find((line) => /Error|error:/.test(line)) ||
    (child.signal ? `killed by ${child.signal}` : `exit ${child.status}`);
  if (/No native build was found/.test(why)) return { failure: `no prebuild for ${process.platform}-${process.arch}` };
  return { failure: `the prebuild did not load (${why.trim()})` };
}

function compile() {
  const cmake = spawnSync('cmake', ['--version'], { encoding: 'utf8' });
  if (cmake.error || cmake.status !== 0) return { failure: 'cmake was not found on PATH' };
  let cmakeJs;
  try {
    cmakeJs = require.resolve('cmake-js/bin/cmake-js', { paths: [root] });
  } catch {
    return { failure: 'the cmake-js package is missing' };
  }
  const args = [cmakeJs, 'rebuild', '--directory', root];
  // Extra CMake settings, e.g. GLOBAL_LOCAL_ATTENTION_CMAKE_ARGS="-DGLA_CUDA=OFF".
  for (const extra of (process.env.GLOBAL_LOCAL_ATTENTION_CMAKE_ARGS || '').split(/\s+/).filter(Boolean)) {
    args.push(extra.startsWith('-D') ? `--C${extra.slice(1)}` : extra);
  }
  const started = Date.now();
  const build = spawnSync(process.execPath, args, { cwd: root, stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8' });
  process.stdout.write(build.stdout || '');
  if (build.error || build.status !== 0) {
    const tail = `${build.stdout || ''}${build.stderr || ''}`.trim().split('\n').slice(-15).join('\n');
    console.warn(tail);
    return { failure: `the CMake build failed (exit ${build.status ?? build.error})` };
  }
  return { seconds: Math.round((Date.now() - started) / 1000) };
}

function main() {
  const fromSource = truthy(process.env.npm_config_build_from_source);
  let prebuildFailure = 'npm_config_build_from_source is set';
  if (!fromSource) {
    const prebuild = tryPrebuild();
    if (prebuild.file) {
      // A binary compiled by an earlier install would shadow the prebuild (node-gyp-build looks in
      // build/Release first): the prebuild is what this install chose.
      fs.rmSync(builtAddon, { force: true });
      record({ ok: true, origin: 'prebuilt', addon: relative(prebuild.file) });
      console.log(`${PREFIX} using the prebuilt native addon ${relative(prebuild.file)} (kernels: ${prebuild.isas.join(', ')})`);
      return;
    }
    prebuildFailure = prebuild.failure;
  }
  if (process.env.GLOBAL_LOCAL_ATTENTION_SKIP_BUILD) giveUp(`${prebuildFailure}, and GLOBAL_LOCAL_ATTENTION_SKIP_BUILD is set`);
  const built = compile();
  if (built.failure) giveUp(`${prebuildFailure}, and ${built.failure}`);
  record({ ok: true, origin: 'built', addon: relative(builtAddon) });
  console.log(`${PREFIX} compiled the native addon from source into ${relative(builtAddon)} in ${built.seconds} s (${prebuildFailure})`);
}

main();
