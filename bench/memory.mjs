#!/usr/bin/env node
// What one call adds to the process's peak memory beyond q, k, v and out (all allocated and
// touched before the call), per backend, sync/async, layout and attention kind. Each case runs in
// its own child process, which reads its peak RSS (getrusage) before and after the call, so one
// case's allocations never count toward another's. Prints the Markdown table the README quotes:
//   node bench/memory.mjs [--backend avx512]
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import * as path from 'node:path';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const argv = process.argv.slice(2);
const gla = (await import('../dist/index.js')).default;
const native = argv.includes('--backend') ? argv[argv.indexOf('--backend') + 1] : gla.backends().find((b) => b !== 'cuda');

const CHILD = `
const g = require(${JSON.stringify(ROOT)});
const [backend, mode, layout, kind, seqLen, dtype] = process.argv.slice(1);
const batch = 1, heads = 8, headDim = 64, n = batch * heads * Number(seqLen) * headDim;
const half = dtype !== 'float32';
const shared = mode === 'async, SharedArrayBuffer';
const make = (x) => {
  const Kind = half ? Uint16Array : Float32Array;
  const array = shared ? new Kind(new SharedArrayBuffer(n * Kind.BYTES_PER_ELEMENT)) : new Kind(n);
  return array.fill(half ? 0x3c00 : x);
};
const q = make(0.5), k = make(0.25), v = make(1), out = make(0);
const options = { batch, heads, seqLen: Number(seqLen), headDim, layout, backend, out, dtype,
  ...(kind === 'window' ? { causal: true, window: [255, 0] } : {}) };
const local = kind === 'window';
const fn = local ? (mode === 'sync' ? g.localGlobalAttentionSync : g.localGlobalAttention) : (mode === 'sync' ? g.fullAttentionSync : g.fullAttention);
// A tiny call first: loads the addon and starts the worker threads, which are not this call's cost.
const t = new Float32Array(8 * 16);
(local ? g.localGlobalAttention : g.fullAttention)(t, t, t, { batch: 1, heads: 1, seqLen: 16, headDim: 8, backend, ...(local ? { window: [2, 0] } : {}) }).then(() => {
  global.gc();
  const before = Math.max(process.memoryUsage().rss, process.resourceUsage().maxRSS * 1024);
  return Promise.resolve(fn(q, k, v, options)).then(() => {
    console.log(JSON.stringify({ inputs: 3 * q.byteLength, added: Math.max(0, process.resourceUsage().maxRSS * 1024 - before) }));
  });
});`;

const MiB = (bytes) => `${(bytes / 2 ** 20).toFixed(1)} MiB`;
const cases = [];
for (const backend of [native, 'js']) {
  for (const mode of ['sync', 'async', 'async, SharedArrayBuffer']) {
    for (const layout of ['bhsd', 'bshd']) {
      cases.push([backend, mode, layout, 'full', backend === 'js' ? 2048 : 8192, 'float32']);
      cases.push([backend, mode, layout, 'window', 32768, 'float32']);
    }
  }
}
cases.push([native, 'sync', 'bshd', 'full', 8192, 'bfloat16'], [native, 'async', 'bshd', 'full', 8192, 'bfloat16']);

console.log('| backend | call | layout | case (h8 d64) | q + k + v | added at peak |');
console.log('| --- | --- | --- | --- | --- | --- |');
for (const [backend, mode, layout, kind, seqLen, dtype] of cases) {
  const r = spawnSync(process.execPath, ['--expose-gc', '-e', CHILD, backend, mode, layout, kind, String(seqLen), dtype], { encoding: 'utf8' });
  const label = kind === 'full' ? `full, seqLen ${seqLen}, ${dtype}` : `causal window [255, 0], seqLen ${seqLen}, ${dtype}`;
  if (r.status !== 0) {
    console.log(`| ${backend} | ${mode} | ${layout} | ${label} | failed: ${r.stderr.trim().split('\n').pop()} | |`);
    continue;
  }
  const { inputs, added } = JSON.parse(r.stdout);
  console.log(`| ${backend} | ${mode} | ${layout} | ${label} | ${MiB(inputs)} | ${MiB(added)} |`);
}
