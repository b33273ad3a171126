// Turns one run's results into what people read: the stdout table, results.json and report.md.
import { writeFileSync } from 'node:fs';
import path from 'node:path';

export function fmtTime(ms) {
  if (ms == null) return '';
  if (ms < 0.01) return `${(ms * 1000).toFixed(2)} µs`;
  if (ms < 1) return `${(ms * 1000).toFixed(1)} µs`;
  if (ms < 100) return `${ms.toFixed(2)} ms`;
  if (ms < 10000) return `${ms.toFixed(1)} ms`;
  return `${(ms / 1000).toFixed(2)} s`;
}

const num = (x, digits = 1) => (x == null ? 'n/a' : x.toFixed(digits));
const pct = (x) => (x == null ? 'n/a' : `${(x * 100).toFixed(0)}%`);

function checkText(r) {
  if (!r.check) return '';
  if (r.check.reference) return 'reference';
  const e = r.check.relL2 === Infinity ? 'inf' : r.check.relL2.toExponential(1);
  return r.check.pass ? `ok ${e}` : `FAILED rel L2 ${e}`;
}

/** One row of cells per result; a skipped or failed result carries its reason instead of figures. */
function rows(results) {
  return results.map((r) => {
    const head = [r.case, r.label ?? r.impl];
    if (r.status !== 'ok') {
      const why = r.status === 'failed' ? `FAILED: ${checkText(r)} vs ${r.check.against}` : `${r.status}: ${r.reason}`;
      return { head, note: why };
    }
    const perCall = r.measure === 'overhead';
    return {
      head,
      cells: [
        perCall ? `${fmtTime(r.ms.median)}/call` : fmtTime(r.ms.median),
        fmtTime(r.ms.min),
        fmtTime(r.ms.max),
        String(r.ms.reps * (r.callsPerRep ?? 1)),
        perCall ? '-' : num(r.gflops),
        perCall ? '-' : pct(r.peakFraction),
        r.measure === 'bytes' ? num(r.gbs) : '-',
        r.measure === 'bytes' ? pct(r.bwFraction) : '-',
        checkText(r),
      ],
    };
  });
}

const HEAD = ['case', 'impl', 'median', 'min', 'max', 'calls', 'GFLOP/s', '%peak', 'GB/s', '%bw', 'check'];

/** Fixed-width text table for stdout. */
export function textTable(results) {
  const rs = rows(results);
  const w = HEAD.map((h) => h.length);
  for (const r of rs) {
    r.head.forEach((c, i) => (w[i] = Math.max(w[i], c.length)));
    r.cells?.forEach((c, i) => (w[i + 2] = Math.max(w[i + 2], c.length)));
  }
  const line = (cells) => cells.map((c, i) => (i < 2 ? c.padEnd(w[i]) : c.padStart(w[i]))).join('  ');
  const out = [line(HEAD), w.map((n) => '-'.repeat(n)).join('  ')];
  let prev;
  for (const r of rs) {
    const head = [r.head[0] === prev ? '' : r.head[0], r.head[1]];
    prev = r.head[0];
    out.push(r.cells ? line([...head, ...r.cells]).trimEnd() : `${head[0].padEnd(w[0])}  ${head[1].padEnd(w[1])}  ${r.note}`);
  }
  return out.join('\n');
}

/** The evaluated targets, one line each; the ones this run could not evaluate, in one line. */
export function targetsText(targets) {
  const done = targets.filter((t) => t.pass !== null);
  const lines = done.map((t) => `${t.pass ? 'PASS' : 'FAIL'}  ${t.text}: ${t.value}`);
  const na = targets.length - done.length;
  if (na) lines.push(`n/a   ${na} of ${targets.length} need cases or backends not in this run (listed in report.md)`);
  return lines.join('\n');
}

function mdTable(results) {
  const rs = rows(results);
  const out = [`| ${HEAD.join(' | ')} |`, `|${HEAD.map((_, i) => (i < 2 ? '---' : '--:')).join('|')}|`];
  let prev;
  for (const r of rs) {
    const c0 = r.head[0] === prev ? '' : `\`${r.head[0]}\``;
    prev = r.head[0];
    if (r.cells) out.push(`| ${c0} | ${r.head[1]} | ${r.cells.join(' | ')} |`);
    else out.push(`| ${c0} | ${r.head[1]} | ${r.note.replace(/\|/g, '\\|')} |${' |'.repeat(HEAD.length - 3)}`);
  }
  return out.join('\n');
}

/** The AVX512_BF16 dot-product line of the machine summary (also logged by cli.mjs). */
export function bf16DotText(peak) {
  const b = peak.bf16Dot;
  const fmaLat = peak.fmaLatencyNs != null ? `; FP32 FMA latency ${peak.fmaLatencyNs} ns` : '';
  if (!b?.available) return `BF16 dot (VDPBF16PS): skipped, ${b?.reason ?? 'not measured'}${fmaLat}`;
  return (
    `BF16 dot (VDPBF16PS zmm, 64 FLOP each), GFLOP/s: ${b.gflops_1t} (1 thread) / ${b.gflops_all} (${peak.threads} threads)` +
    (b.disturbed ? ` — disturbed by other load (${peak.threads} x 1 thread = ${b.gflops_used})` : '') +
    `; latency ${b.latency_ns} ns per dependent instruction${fmaLat}`
  );
}

function machineMd(m, peak) {
  const lines = [
    `- CPU: ${m.cpu}${m.cpuFamily ? ` (family/model ${m.cpuFamily})` : ''}, ${m.cores} logical cores${m.hypervisor ? ' (virtual machine)' : ''}, ${m.memoryGiB} GiB RAM`,
    `- CPU flags: ${m.cpuFlags.join(', ') || 'none of interest'}; package backends: ${m.isa.join(', ') || 'none (package not loaded)'}`,
    ...(m.backendsSkipped ?? []).map((b) => `- Backend ${b.name} not available: ${b.reason}`),
    `- Node ${m.node}, ${m.platform}; onnxruntime-node ${m.onnxruntime ?? 'not loaded'}`,
    `- Threads: ${m.threads} (the package's \`threads\` and onnxruntime's intraOpNumThreads)`,
    `- Date: ${m.date}; 1-minute load average at start ${m.loadAverage1m.toFixed(2)}`,
  ];
  if (m.load)
    lines.push(
      `- Other load during the timed cases: ${m.load.otherCores.toFixed(2)} cores busy with other processes, ${m.load.stealCores.toFixed(2)} cores stolen by the hypervisor (on average)`,
    );
  if (!peak.available) lines.push(`- Peak: unknown (${peak.reason}); fractions read n/a`);
  else {
    const fma = Object.entries(peak.fma)
      .map(
        ([isa, v]) =>
          `${isa} ${v.gflops_1t} (1 thread) / ${v.gflops_all} (${peak.threads} threads)` +
          (v.disturbed ? ` — disturbed by other load, so ${v.gflops_used} = ${peak.threads} x 1 thread is used` : ''),
      )
      .join('; ');
    const bw = peak.bandwidth;
    lines.push(`- FP32 FMA peak, GFLOP/s: ${fma || 'n/a'} — \`bench/peak/peak.cpp\`, ${peak.compiler ?? ''}`);
    lines.push(`- ${bf16DotText(peak)}`);
    lines.push(
      `- Memory bandwidth (${peak.threads} threads, ${bw.array_mib} MiB arrays), GB/s: copy ${bw.copy_gbs}, triad ${bw.triad_gbs}, read ${bw.read_gbs}; %bw uses the best, ${peak.gbs.toFixed(1)}`,
    );
  }
  return lines.join('\n');
}

/** The paired sync / async timings of bench/async-cost.mjs, one line per case. */
export function asyncCostText(rows) {
  const lines = rows.map((r) => {
    const parts = Object.entries(r.times).map(([name, t]) => `${name} ${fmtTime(t.median)}${name === 'sync' ? '' : ` (${t.ratioToFirst.toFixed(3)}x)`}`);
    return `  ${r.case} [${r.backend}]: ${parts.join(', ')}`;
  });
  return `Async calls against sync (paired, ratio = median of per-round ratios):\n${lines.join('\n')}`;
}

/** The async-against-sync table (the report's, and the README's from the same run). */
export function asyncCostTable(rows) {
  const names = Object.keys(rows[0].times);
  const head = `| case | ${names.join(' | ')} |\n|---|${names.map(() => '--:').join('|')}|`;
  const body = rows.map((r) => `| \`${r.case}\` | ${names.map((n) => `${fmtTime(r.times[n].median)}${n === 'sync' ? '' : ` (${r.times[n].ratioToFirst.toFixed(3)}x)`}`).join(' | ')} |`);
  return `${head}\n${body.join('\n')}`;
}

function asyncCostMd(rows) {
  if (!rows?.length) return '';
  return `## Async calls against sync

Timed as paired comparisons (each round calls all three, rotating the order); the ratio is the
median over rounds of the async call's time over the sync call's in the same round. An async call
copies q, k and v on plain ArrayBuffers at submit and delivers out when it settles (memory the
caller could transfer or shrink meanwhile); SharedArrayBuffer-backed arrays are used in place.

${asyncCostTable(rows)}

`;
}

export function markdown({ machine, peak, results, asyncCost, targets, options, charts, primary }) {
  return `# global-local-attention benchmark

Command: \`${options.command}\`

## Machine

${machineMd(machine, peak)}

## Speed targets (${primary ?? 'no native backend'}, this run)

${targets.map((t) => `- ${t.pass === true ? '**PASS**' : t.pass === false ? '**FAIL**' : 'n/a'} ${t.text}: ${t.missing ? `needs ${t.missing} (not in this run)` : t.value}`).join('\n')}

## Results

Median, min and max are per call over the repetitions after warm-up; every implementation's
output was checked against the naive JS attention (${TOLERANCE_TEXT}) on the same inputs before
it was timed. GFLOP/s counts useful work only: 4·headDim per visible (query, key) pair
(= 4·b·h·s·kvs·d for full attention), also for peers that compute masked scores.
%peak is against the measured FP32 FMA peak at the same thread count; decode's GB/s counts K and
V read once.

${mdTable(results)}

${asyncCostMd(asyncCost)}## Charts

![time against seqLen](${charts.time})

![throughput per backend and peer](${charts.throughput})
`;
}

const TOLERANCE_TEXT = 'rel L2 <= 1e-4, on the whole output or, on large shapes, on sampled rows';

export function writeOutputs(dir, { json, md, svgs }) {
  writeFileSync(path.join(dir, 'results.json'), `${JSON.stringify(json, null, 2)}\n`);
  writeFileSync(path.join(dir, 'report.md'), md);
  for (const [name, svg] of Object.entries(svgs)) writeFileSync(path.join(dir, name), svg);
}
