#!/usr/bin/env node
// `npm test`: the C++ core's own tests (ctest, no Node involved), then the vitest suite on every
// backend that backends() lists. vitest also writes its JSON report to .vitest-report.json, from
// which the last line "N passed, N failed" is counted.
'use strict';

const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const report = path.join(root, '.vitest-report.json');
const jobs = String(Math.max(1, require('node:os').availableParallelism()));

function run(command, args, options = {}) {
  console.error(`$ ${command} ${args.join(' ')}`);
  const result = spawnSync(command, args, { cwd: root, stdio: 'inherit', ...options });
  return result.error ? 1 : result.status;
}

let nativeFailed = 0;
const hasCmake = !spawnSync('cmake', ['--version']).error;
if (process.env.GLOBAL_LOCAL_ATTENTION_SKIP_CTEST) {
  console.error('C++ tests: skipped (GLOBAL_LOCAL_ATTENTION_SKIP_CTEST is set)');
} else if (!hasCmake) {
  console.error('C++ tests: skipped (cmake not found on PATH)');
} else {
  const dir = path.join(root, 'build-tests');
  const configured =
    run('cmake', ['-S', '.', '-B', dir, '-DCMAKE_BUILD_TYPE=Release', '-DGLA_NATIVE_TESTS=ON']) === 0 &&
    run('cmake', ['--build', dir, '-j', jobs]) === 0;
  if (!configured || run('ctest', ['--test-dir', dir, '--output-on-failure']) !== 0) nativeFailed = 1;
}

fs.rmSync(report, { force: true });
// vitest's package exports do not expose its CLI file, so locate it from package.json.
const vitest = path.join(path.dirname(require.resolve('vitest/package.json', { paths: [root] })), 'vitest.mjs');
const status = run(process.execPath, [
  vitest, 'run', '--reporter=default', '--reporter=json', `--outputFile.json=${report}`,
  ...process.argv.slice(2),
]);

let passed = 0;
let failed = 0;
if (fs.existsSync(report)) {
  const json = JSON.parse(fs.readFileSync(report, 'utf8'));
  passed = json.numPassedTests;
  failed = json.numFailedTests + (json.numTotalTestSuites > 0 && json.success === false && json.numFailedTests === 0 ? 1 : 0);
} else {
  failed = 1;
}
if (nativeFailed) console.error('C++ tests (ctest): FAILED');
console.log(`vitest: ${passed} passed, ${failed} failed`);
process.exit(status !== 0 || nativeFailed ? 1 : 0);
