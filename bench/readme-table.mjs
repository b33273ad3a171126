#!/usr/bin/env node
// Prints the README's performance table from one bench run's results.json, so that every figure in
// the README comes from that run and none is typed by hand:
//   node bench/readme-table.mjs [bench/report/results.json]
import { readFileSync } from 'node:fs';
import { asyncCostTable, fmtTime } from './report.mjs';

const file = process.argv[2] ?? new URL('./report/results.json', import.meta.url).pathname;
const run = JSON.parse(readFileSync(file, 'utf8'));
const P = run.primaryBackend;
const find = (caseId, impl) => run.results.find((r) => r.case === caseId && r.impl === impl && r.status === 'ok');
const pct = (f) => `${Math.round(f * 100)}%`;

function ours(caseId, impl, { peak = false, bandwidth = false } = {}) {
  const r = find(caseId, impl);
  if (!r) return '—';
  if (r.measure === 'overhead') return `${fmtTime(r.ms.median)}`;
  let text = fmtTime(r.ms.median);
  if (bandwidth && r.gbs != null) text += `, ${r.gbs.toFixed(1)} GB/s (${pct(r.bwFraction)} of bandwidth)`;
  else if (peak) text += `, ${r.gflops.toFixed(0)} GFLOP/s (${pct(r.peakFraction)} of peak)`;
  return text;
}

function bestPeer(caseId) {
  const peers = run.results.filter((r) => r.case === caseId && !r.ours && r.impl !== 'naive-js' && r.status === 'ok');
  if (peers.length === 0) return '—';
  const best = peers.reduce((a, b) => (a.ms.median <= b.ms.median ? a : b));
  const name = { 'ort-mha': 'MultiHeadAttention', 'ort-gqa': 'GroupQueryAttention', 'ort-plain': 'MatMul+Softmax graph' }[best.impl] ?? best.impl;
  return `${name} ${fmtTime(best.ms.median)}`;
}

const rows = [
  ['full, h8 d64, seqLen 2048, bshd', 'full-h8-d64-s2048-bshd', { peak: true }],
  ['full, h8 d64, seqLen 4096, bshd', 'full-h8-d64-s4096-bshd', { peak: true }],
  ['full, h32 d128, seqLen 2048, bshd', 'full-h32-d128-s2048-bshd', { peak: true }],
  ['full, h8 d64, seqLen 16384', 'full-h8-d64-s16384', { peak: true }],
  ['causal, h8 d64, seqLen 4096, bshd', 'causal-h8-d64-s4096-bshd', { peak: true }],
  ['encoder batch 32 × seqLen 128, h12 d64, bshd', 'full-b32-h12-d64-s128-bshd', { peak: true }],
  ['encoder batch 16 × seqLen 512, h12 d64, bshd', 'full-b16-h12-d64-s512-bshd', { peak: true }],
  ['local-global, h8 d64, window [256, 256] + 4 globals, seqLen 16384, bshd', 'lg-h8-d64-s16384-w256-256-g4-bshd', {}],
  ['local-global, same, seqLen 8192', 'lg-h8-d64-s8192-w256-256-g4', {}],
  ['local-global, same, seqLen 65536', 'lg-h8-d64-s65536-w256-256-g4', {}],
  ['causal window [511, 0], h8 d64, seqLen 16384, bshd', 'swa-h8-d64-s16384-w511-0-bshd', {}],
  ['decode, h32 kvh8 d128, kvSeqLen 32768', 'decode-h32-kvh8-d128-s1-kvs32768', { bandwidth: true }],
  ['tiny sync call, seqLen 1, d64, options built per call', 'tiny-h1-d64-s1', {}],
];

const backends = run.machine.isa.filter((b) => b !== 'cuda');
const head = `| case (fp32) | ${backends.map((b) => (b === P ? `${b}` : b)).join(' | ')} | ${P} reading bhsd | onnxruntime (best peer) |`;
const rule = `|${' --- |'.repeat(backends.length + 3)}`;
const lines = rows.map(([label, id, opts]) => {
  const cells = backends.map((b) => ours(id, b, b === P ? opts : {}));
  const bhsd = id.endsWith('-bshd') ? ours(id, `${P} bhsd`) : '';
  return `| ${label} | ${cells.join(' | ')} | ${bhsd} | ${bestPeer(id)} |`;
});
process.stdout.write(`${[head, rule, ...lines].join('\n')}\n`);

// The half-precision variants (bench/ours.mjs HALF_VARIANTS) beside float32 and onnxruntime's
// float32 MultiHeadAttention, each ratio from the same interleaved rounds.
const halfRows = [
  ['full, h8 d64, seqLen 2048, bshd', 'full-h8-d64-s2048-bshd'],
  ['full, h8 d64, seqLen 4096, bshd', 'full-h8-d64-s4096-bshd'],
  ['full, h32 d128, seqLen 2048, bshd', 'full-h32-d128-s2048-bshd'],
  ['causal, h8 d64, seqLen 4096, bshd', 'causal-h8-d64-s4096-bshd'],
  ['local-global, h8 d64, window [256, 256] + 4 globals, seqLen 16384, bshd', 'lg-h8-d64-s16384-w256-256-g4-bshd'],
  ['decode, h32 kvh8 d128, kvSeqLen 32768', 'decode-h32-kvh8-d128-s1-kvs32768'],
];
const against = (id, impl) => {
  const r = find(id, impl);
  const base = find(id, P);
  if (!r || !base) return '—';
  return `${fmtTime(r.ms.median)} (${(base.ms.median / r.ms.median).toFixed(2)}x)`;
};
const ort = (id) => {
  const r = find(id, 'ort-mha');
  return r ? fmtTime(r.ms.median) : '—';
};
const halfHead = `| case | ${P} float32 | ${P} bfloat16 | ${P} float32 in, bfloat16 products | ${P} float16 | onnxruntime MultiHeadAttention (float32) |`;
const halfLines = halfRows.map(([label, id]) =>
  `| ${label} | ${ours(id, P)} | ${against(id, `${P} bf16`)} | ${against(id, `${P} f32 in, bf16 products`)} | ${against(id, `${P} f16`)} | ${ort(id)} |`);
process.stdout.write(`\n${[halfHead, `|${' --- |'.repeat(6)}`, ...halfLines].join('\n')}\n`);

// Async calls against sync calls of the same case, paired in the same rounds (bench/ours.mjs).
if (run.asyncCost?.length) process.stdout.write(`\n${asyncCostTable(run.asyncCost)}\n`);
