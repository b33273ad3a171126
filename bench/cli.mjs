#!/usr/bin/env node
// `npm run bench`: times every backend of the package and its peers on the cases of cases.mjs,
// each checked against the naive reference first, and writes the table, JSON, report and charts.
import { mkdirSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { groups as allGroups, selectCases } from './cases.mjs';
import { measureAsyncCost, measureSubmission } from './async-cost.mjs';
import { measureVarlen } from './varlen.mjs';
import { machineInfo, measurePeak, startLoadMonitor } from './machine.mjs';
import { callsFor, randomTensor, relL2, timeInterleaved, TOLERANCE } from './measure.mjs';
import { HALF_VARIANTS, loadPackage, ourImpl, PAGED_VARIANTS, SERVING_VARIANTS } from './ours.mjs';
import { loadPeers } from './peers/index.mjs';
import { naiveAttention, naiveRows, pickRows, sampleRows } from './peers/naive.mjs';
import { ortVersion } from './peers/ort.mjs';
import { asyncCostText, bf16DotText, fmtTime, markdown, targetsText, textTable, writeOutputs } from './report.mjs';
import { chartsFor } from './svg.mjs';
import { evaluateTargets, primaryBackend } from './targets.mjs';
import { countVisiblePairs } from './visibility.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));

const USAGE = `usage: node bench/cli.mjs [options]      (npm run bench -- [options])

  --quick              small shapes, few repetitions: under a minute on 2 cores
  --backends a,b       package backends to time (default: all of backends())
  --cases a,b          case groups: ${allGroups.join(', ')} (default: all)
  --peers a,b          peers: naive-js, ort-mha, ort-plain, ort-gqa (default: all)
  --no-peers           time the package only
  --threads N          threads for the package and onnxruntime (default: all cores)
  --reps N             exactly N timed repetitions per measurement (default: a time budget, min 3)
  --out DIR            output directory (default: bench/results)
  --help
`;

function parseArgs(argv) {
  const o = { quick: false, peers: true, out: path.join(here, 'results') };
  const list = (s) => s.split(',').map((x) => x.trim()).filter(Boolean);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const [flag, inline] = a.startsWith('--') && a.includes('=') ? a.split(/=(.*)/s) : [a, undefined];
    const value = () => {
      const v = inline ?? argv[++i];
      if (v === undefined) fail(`${flag} needs a value`);
      return v;
    };
    const int = () => {
      const v = Number(value());
      if (!Number.isInteger(v) || v < 1) fail(`${flag} needs a positive integer`);
      return v;
    };
    if (flag === '--quick') o.quick = true;
    else if (flag === '--backends') o.backends = list(value());
    else if (flag === '--cases') o.groups = list(value());
    else if (flag === '--peers') o.peerNames = list(value());
    else if (flag === '--no-peers') o.peers = false;
    else if (flag === '--threads') o.threads = int();
    else if (flag === '--reps') o.reps = int();
    else if (flag === '--out') o.out = path.resolve(value());
    else if (flag === '--help' || flag === '-h') {
      process.stdout.write(USAGE);
      process.exit(0);
    } else fail(`unknown option ${a}`);
  }
  for (const g of o.groups ?? []) if (!allGroups.includes(g)) fail(`unknown case group ${g} (have ${allGroups.join(', ')})`);
  return o;
}

function fail(msg) {
  process.stderr.write(`bench: ${msg}\n\n${USAGE}`);
  process.exit(2);
}

const log = (msg) => process.stderr.write(`${msg}\n`);

// Rough GFLOP/s to predict a call's duration before the first one; replaced by what each
// implementation achieves as the run goes. Used only to skip calls that would take too long.
const SEED_RATE = { 'naive-js': 1, js: 2, scalar: 5, cuda: 500 };
const learnedRate = new Map();
const rateOf = (name) => learnedRate.get(name) ?? SEED_RATE[name] ?? 50;

function limits(quick, impl) {
  const slowJs = impl.name === 'js' || impl.name === 'naive-js';
  return {
    // --quick keeps the JS backends on their smallest shapes and the scalar one off its biggest:
    // together they would take most of the minute. Peers get less room than the package in a
    // full run: a 14 s onnxruntime call tells nothing a 5 s one doesn't.
    maxCallS: quick ? (impl.name === 'scalar' ? 0.5 : slowJs ? 1.5 : 1) : slowJs ? 4 : impl.ours ? 30 : 12,
    budgetMs: quick ? 200 : 2000,
    maxReps: quick ? 8 : 50,
  };
}

function usefulFlops(c) {
  return 4 * c.headDim * countVisiblePairs(c);
}

function kvBytes(c) {
  return 2 * c.batch * (c.kvHeads ?? c.heads) * (c.kvSeqLen ?? c.seqLen) * c.headDim * 4;
}

function makeInputs(c, seed) {
  const kvh = c.kvHeads ?? c.heads;
  const kvs = c.kvSeqLen ?? c.seqLen;
  return {
    q: randomTensor(c.batch * c.heads * c.seqLen * c.headDim, seed),
    k: randomTensor(c.batch * kvh * kvs * c.headDim, seed + 1),
    v: randomTensor(c.batch * kvh * kvs * c.headDim, seed + 2),
  };
}

/**
 * The expected output: the naive attention on the whole output when that is quick, else on
 * sampled rows (first/last of every head, the global rows, a seeded spread), computed exactly.
 */
function reference(c, inputs, quick) {
  const est = usefulFlops(c) / (rateOf('naive-js') * 1e9);
  if (est <= (quick ? 1 : 3)) {
    const t0 = performance.now();
    const full = naiveAttention(inputs.q, inputs.k, inputs.v, c);
    const ms = performance.now() - t0;
    learnedRate.set('naive-js', usefulFlops(c) / (ms * 1e6));
    return { against: 'naive-js (whole output)', full, ms, pick: (out) => out, expected: full };
  }
  const rows = sampleRows(c);
  const expected = naiveRows(inputs.q, inputs.k, inputs.v, c, rows);
  return { against: `naive-js (${rows.length} sampled rows)`, expected, pick: (out) => pickRows(out, rows, c.headDim) };
}

// Cases this large are timed one implementation at a time: holding every implementation's
// buffers and sessions at once (onnxruntime's CPU graphs allocate every score) could exhaust memory.
const INTERLEAVE_MAX_SEQ = 8192;

/**
 * Every implementation on one case: each is prepared and its first call checked against the
 * reference, then all that passed are timed together as a paired comparison (timeInterleaved:
 * every round calls each once, rotating the order), so that a slow spell of the shared machine
 * lands on all of them alike. Returns one result per implementation.
 */
async function benchCase(c, impls, ctx) {
  const results = [];
  const ready = [];
  for (const impl of impls) {
    const r = await prepareAndCheck(c, impl, ctx);
    if (r.prepared) ready.push(r);
    else results.push(r.result);
  }
  try {
    if ((c.kvSeqLen ?? c.seqLen) <= INTERLEAVE_MAX_SEQ && c.seqLen <= INTERLEAVE_MAX_SEQ) {
      await timeTogether(c, ready, ctx);
    } else {
      for (const r of ready) await timeTogether(c, [r], ctx);
    }
  } finally {
    for (const r of ready) await r.p.dispose();
  }
  for (const r of ready) results.push(r.result);
  // Back in the implementations' order.
  return impls.map((impl) => results.find((r) => r.impl === impl.name));
}

async function prepareAndCheck(c, impl, ctx) {
  const base = { case: c.id, group: c.group, op: c.op, measure: c.measure, layout: c.layout ?? 'bhsd', impl: impl.name, ours: !!impl.ours };
  const done = (result) => ({ prepared: false, result });
  if (impl.unavailable) return done({ ...base, status: 'skipped', reason: impl.unavailable });
  const why = impl.why(c);
  if (why) return done({ ...base, status: 'skipped', reason: why });
  const lim = limits(ctx.quick, impl);
  const work = impl.work ? impl.work(c) : ctx.flops;
  const est = work / (rateOf(impl.name) * 1e9);
  if (c.measure !== 'overhead' && est > lim.maxCallS)
    return done({ ...base, status: 'skipped', reason: `too slow, est. ${est.toFixed(1)}s per call`, estSeconds: est });

  let p;
  try {
    p = await impl.prepare(c, ctx.inputs, ctx.threads);
  } catch (e) {
    return done({ ...base, status: impl.ours ? 'error' : 'skipped', reason: `failed to build: ${firstLine(e)}` });
  }
  const label = p.label;
  try {
    // The naive peer computed the whole reference already: that was its checked first call.
    const isRef = impl.name === 'naive-js' && !!ctx.ref.full;
    let firstMs = ctx.ref.ms;
    if (!isRef) {
      const t0 = performance.now();
      await p.run();
      firstMs = performance.now() - t0;
    }
    const out = isRef ? ctx.ref.full : p.output();
    // An implementation that computes the case with extra options is checked against the
    // reference with the same options.
    const ref = impl.referenceOptions ? reference({ ...c, ...impl.referenceOptions(c) }, ctx.inputs, ctx.quick) : ctx.ref;
    const check = isRef
      ? { against: ref.against, reference: true, pass: true }
      : { against: ref.against, relL2: relL2(ref.pick(out), ref.expected) };
    if (!isRef) check.pass = check.relL2 <= (impl.tolerance ?? TOLERANCE);
    if (!check.pass) {
      await p.dispose();
      return done({ ...base, label, status: 'failed', check });
    }
    let callsPerRep = 1;
    if (c.measure === 'overhead') callsPerRep = await callsFor(p.run, ctx.quick ? 10 : 25);
    return { prepared: true, impl, p, lim, work, firstMs, callsPerRep, result: { ...base, label, status: 'pending', check, callsPerRep } };
  } catch (e) {
    await p.dispose();
    return done({ ...base, label, status: impl.ours ? 'error' : 'skipped', reason: `call failed: ${firstLine(e)}` });
  }
}

async function timeTogether(c, ready, ctx) {
  if (ready.length === 0) return;
  const runs = {};
  for (const r of ready) {
    runs[r.impl.name] = r.callsPerRep === 1
      ? r.p.run
      : async () => {
          for (let i = 0; i < r.callsPerRep; i++) {
            const x = r.p.run();
            if (x && typeof x.then === 'function') await x;
          }
        };
  }
  const budgetMs = Math.max(...ready.map((r) => r.lim.budgetMs)) * ready.length;
  const maxRounds = Math.min(...ready.map((r) => r.lim.maxReps));
  let times;
  try {
    times = await timeInterleaved(runs, {
      // The checked call already warmed caches and the JIT; a long one needs no second warm-up.
      warmup: ready.every((r) => r.firstMs < 200) ? 1 : 0,
      minRounds: ctx.reps ?? (c.measure === 'overhead' ? 5 : 3),
      maxRounds: ctx.reps ?? maxRounds,
      budgetMs,
    });
  } catch (e) {
    for (const r of ready) Object.assign(r.result, { status: r.impl.ours ? 'error' : 'skipped', reason: `call failed: ${firstLine(e)}` });
    return;
  }
  for (const r of ready) {
    const t = times[r.impl.name];
    const ms = { median: t.median / r.callsPerRep, min: t.min / r.callsPerRep, max: t.max / r.callsPerRep, reps: t.reps };
    if (c.measure !== 'overhead') learnedRate.set(r.impl.name, r.work / (ms.median * 1e6));
    const gflops = ctx.flops / (ms.median * 1e6);
    // Bandwidth is the figure of merit only where K and V dominate the traffic (decode).
    const gbs = c.measure === 'bytes' ? ctx.bytes / (ms.median * 1e6) : null;
    Object.assign(r.result, {
      status: 'ok',
      ms,
      interleavedWith: ready.length > 1 ? ready.map((x) => x.impl.name).filter((n) => n !== r.impl.name) : [],
      gflops,
      peakFraction: ctx.peak.gflops ? gflops / ctx.peak.gflops : null,
      gbs,
      bwFraction: gbs !== null && ctx.peak.gbs ? gbs / ctx.peak.gbs : null,
    });
  }
}

const firstLine = (e) => String(e?.message ?? e).split('\n')[0].slice(0, 200);

function describe(r) {
  if (r.status === 'ok') {
    const t = r.measure === 'overhead' ? `${fmtTime(r.ms.median)}/call` : fmtTime(r.ms.median);
    const fig = r.measure === 'overhead' ? '' : r.measure === 'bytes' ? `, ${r.gbs.toFixed(1)} GB/s` : `, ${r.gflops.toFixed(1)} GFLOP/s`;
    return `${t}${fig}`;
  }
  return r.status === 'failed' ? `FAILED (rel L2 ${r.check.relL2.toExponential(1)})` : `${r.status}: ${r.reason}`;
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const threads = opts.threads ?? (os.availableParallelism?.() ?? os.cpus().length);
  const started = performance.now();

  const pkg = await loadPackage();
  if (pkg.error) log(`package not loaded: ${pkg.error} — timing peers only`);
  const available = pkg.backends ?? [];
  const wanted = opts.backends ?? (available.length ? available : ['js']);
  const ours = wanted.map((b) => {
    if (pkg.error) return { name: b, ours: true, unavailable: `package not loaded (${pkg.error})` };
    if (!available.includes(b)) {
      const why = pkg.report.find((r) => r.name === b)?.reason ?? `not in backends(): ${available.join(', ')}`;
      return { name: b, ours: true, unavailable: `backend not available: ${why}` };
    }
    return ourImpl(pkg.api, b);
  });
  let peers = opts.peers ? await loadPeers() : [];
  if (opts.peerNames) {
    for (const n of opts.peerNames) if (!peers.some((p) => p.name === n)) fail(`unknown peer ${n}`);
    peers = peers.filter((p) => opts.peerNames.includes(p.name));
  }
  // The primary backend again in bhsd, timed beside its bshd run on every bshd case.
  const primaryForLayouts = primaryBackend(available.filter((b) => wanted.includes(b)));
  const layoutTwin = primaryForLayouts && !pkg.error ? [ourImpl(pkg.api, primaryForLayouts, { layout: 'bhsd' })] : [];
  // And on half-precision data, on the cases marked `half` (builds without dtype support skip).
  const halfVariants =
    primaryForLayouts && !pkg.error && typeof pkg.api.encodeBfloat16 === 'function'
      ? HALF_VARIANTS.map((variant) => ourImpl(pkg.api, primaryForLayouts, { variant }))
      : [];
  // And with the serving options, on the cases marked `serving` (builds without them skip).
  const servingVariants =
    primaryForLayouts && !pkg.error && typeof pkg.api.encodeBfloat16 === 'function'
      ? [...SERVING_VARIANTS, ...PAGED_VARIANTS].map((variant) => ourImpl(pkg.api, primaryForLayouts, { variant }))
      : [];
  const impls = [...ours, ...layoutTwin, ...halfVariants, ...servingVariants, ...peers];

  const machine = machineInfo({ threads, isa: available, ortVersion: ortVersion() });
  machine.backendsSkipped = (pkg.report ?? []).filter((r) => !r.available).map(({ name, reason }) => ({ name, reason }));
  for (const { name, reason } of machine.backendsSkipped) log(`backend ${name} not available: ${reason}`);
  const peak = measurePeak({ threads, quick: opts.quick, log });
  if (!peak.available) log(`peak unknown: ${peak.reason}`);
  else {
    log(
      `FMA peak ${peak.gflops ?? 'n/a'} GFLOP/s (${threads} threads), bandwidth ${peak.gbs.toFixed(1)} GB/s`,
    );
    log(bf16DotText(peak));
  }

  const cases = selectCases({ quick: opts.quick, groups: opts.groups });
  const stopMonitor = startLoadMonitor();
  const results = [];
  let seed = 1;
  for (const [n, c] of cases.entries()) {
    log(`[${n + 1}/${cases.length}] ${c.id}`);
    const inputs = makeInputs(c, (seed += 7919));
    const flops = usefulFlops(c);
    const ref = reference(c, inputs, opts.quick);
    const ctx = { quick: opts.quick, threads, reps: opts.reps, inputs, flops, bytes: kvBytes(c), ref, peak };
    for (const r of await benchCase(c, impls, ctx)) {
      Object.assign(r, { flops, bytes: ctx.bytes, visiblePairs: flops / (4 * c.headDim) });
      results.push(r);
      log(`    ${(r.label ?? r.impl).padEnd(18)} ${describe(r)}`);
    }
    globalThis.gc?.();
  }

  const primaryNative = primaryBackend(available.filter((b) => wanted.includes(b)));
  let asyncCost = [];
  if ((!opts.groups || opts.groups.includes('async')) && primaryNative !== null && primaryNative !== 'js') {
    log(`async calls against sync, by where the buffers live (${primaryNative})`);
    asyncCost = await measureAsyncCost(pkg.api, primaryNative, threads, { quick: opts.quick, log });
  }
  let varlen = [];
  if ((!opts.groups || opts.groups.includes('varlen')) && primaryNative !== null) {
    log(`packed variable-length batch against separate and padded calls (${primaryNative})`);
    varlen = await measureVarlen(pkg.api, primaryNative, threads, { quick: opts.quick, log });
  }
  let asyncSubmission = null;
  if ((!opts.groups || opts.groups.includes('async') || opts.groups.includes('tiny')) && primaryNative !== null) {
    asyncSubmission = await measureSubmission(pkg.api, primaryNative);
    log(`async submission (${primaryNative}): ${asyncSubmission.calls} tiny calls in ${asyncSubmission.loopMs.toFixed(2)} ms (${asyncSubmission.perCallUs.toFixed(2)} µs each)`);
  }

  machine.load = stopMonitor();
  if (machine.load && machine.load.otherCores > 0.25)
    log(`note: other processes used ${machine.load.otherCores.toFixed(2)} cores on average during the run; figures are low by about that share`);
  const primary = primaryNative;
  const targets = evaluateTargets(results, primary, asyncCost, asyncSubmission, varlen);
  const implNames = impls.map((i) => i.name);
  const svgs = chartsFor(results, cases, implNames, peak);
  const command = `node bench/cli.mjs ${process.argv.slice(2).join(' ')}`.trim();
  const pkgJson = JSON.parse(readFileSync(path.join(here, '..', 'package.json'), 'utf8'));
  const json = {
    package: `${pkgJson.name}@${pkgJson.version}`,
    command,
    options: { ...opts, threads, tolerance: TOLERANCE },
    machine,
    peak,
    primaryBackend: primary,
    cases,
    results,
    asyncCost,
    asyncSubmission,
    varlen,
    targets,
    seconds: (performance.now() - started) / 1000,
  };
  mkdirSync(opts.out, { recursive: true });
  const md = markdown({
    machine,
    peak,
    results,
    asyncCost,
    targets,
    primary,
    options: { command },
    charts: { time: 'time-vs-seqlen.svg', throughput: 'throughput.svg' },
  });
  writeOutputs(opts.out, { json, md, svgs });

  const peakText = peak.available ? `FMA peak ${peak.gflops ?? 'n/a'} GFLOP/s, bandwidth ${peak.gbs.toFixed(1)} GB/s` : 'peak unknown';
  const loadText = machine.load ? `; other load ${machine.load.otherCores.toFixed(2)} cores` : '';
  process.stdout.write(
    `${machine.cpu}, ${threads} thread${threads === 1 ? '' : 's'}, ${peakText}${loadText}\n` +
      (peak.available ? `${bf16DotText(peak)}\n` : '') +
      `\n${textTable(results)}\n\n` +
      (asyncCost.length ? `${asyncCostText(asyncCost)}\n\n` : '') +
      `Speed targets (${primary ?? 'no native backend'}):\n${targetsText(targets)}\n`,
  );
  const rel = path.relative(process.cwd(), opts.out);
  log(`\nwrote ${rel.startsWith('..') ? opts.out : rel || '.'}/{results.json,report.md,time-vs-seqlen.svg,throughput.svg} in ${json.seconds.toFixed(1)} s`);
  const broken = results.filter((r) => r.ours && (r.status === 'failed' || r.status === 'error'));
  if (broken.length) {
    log(`FAILED: ${broken.map((r) => `${r.impl} on ${r.case}`).join(', ')}`);
    process.exitCode = 1;
  }
}

main().catch((e) => {
  process.stderr.write(`bench: ${e.stack ?? e}\n`);
  process.exit(1);
});
