// What the run was measured on, and what that hardware can do at most (FMA peak, bandwidth), so
// that every figure can be read as a fraction of the possible.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const PEAK_SRC = path.join(here, 'peak', 'peak.cpp');
// The binary is a build output: it lives with the (git-ignored) results, not beside its source.
const PEAK_BIN = path.join(here, 'results', 'peak');

function cpuinfo() {
  try {
    return readFileSync('/proc/cpuinfo', 'utf8');
  } catch {
    return '';
  }
}

export function machineInfo({ threads, isa, ortVersion }) {
  const info = cpuinfo();
  const field = (name) => info.match(new RegExp(`^${name}\\s*:\\s*(.*)$`, 'm'))?.[1]?.trim();
  const flags = (field('flags') ?? '').split(/\s+/);
  return {
    cpu: field('model name') ?? os.cpus()[0]?.model ?? 'unknown',
    cpuFamily: field('cpu family') && `${field('cpu family')}/${field('model')}`,
    cpuFlags: ['avx512f', 'avx512bw', 'avx512vl', 'avx512_bf16', 'avx2', 'fma', 'f16c'].filter((f) => flags.includes(f)),
    cores: os.availableParallelism?.() ?? os.cpus().length,
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    platform: `${os.platform()} ${os.release()} ${os.arch()}`,
    hypervisor: flags.includes('hypervisor'),
    // Another busy process on a 2-core machine halves every figure; say so in the report.
    loadAverage1m: os.loadavg()[0],
    node: process.version,
    isa,
    threads,
    onnxruntime: ortVersion,
    date: new Date().toISOString(),
  };
}

function cpuJiffies() {
  try {
    const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
    const [user, nice, system, idle, iowait, irq, softirq, steal] = f;
    return { busy: user + nice + system + irq + softirq, steal: steal ?? 0 };
  } catch {
    return null;
  }
}

/**
 * Watches how much CPU the rest of the machine uses while the bench runs: on a small shared
 * machine another tenant's build halves every figure, and the report should say so.
 * stop() -> { otherCores, stealCores } averaged over the interval, or null off Linux.
 */
export function startLoadMonitor() {
  const hz = 100; // USER_HZ: /proc/stat counts in 1/100 s on every mainstream Linux build
  const j0 = cpuJiffies();
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  return () => {
    const j1 = cpuJiffies();
    if (!j0 || !j1) return null;
    const wall = (performance.now() - t0) / 1000;
    const c = process.cpuUsage(c0);
    const ours = (c.user + c.system) / 1e6;
    return {
      otherCores: Math.max(0, ((j1.busy - j0.busy) / hz - ours) / wall),
      stealCores: (j1.steal - j0.steal) / hz / wall,
    };
  };
}

function compilerVersion() {
  try {
    return execFileSync('c++', ['--version'], { encoding: 'utf8' }).split('\n')[0];
  } catch {
    return null;
  }
}

/** Builds bench/results/peak when missing or older than its source; returns a reason on failure. */
function buildPeak(log) {
  if (existsSync(PEAK_BIN) && statSync(PEAK_BIN).mtimeMs >= statSync(PEAK_SRC).mtimeMs) return null;
  if (!compilerVersion()) return 'no C++ compiler (c++) on PATH';
  mkdirSync(path.dirname(PEAK_BIN), { recursive: true });
  log(`compiling ${path.relative(process.cwd(), PEAK_SRC)} ...`);
  const r = spawnSync('c++', ['-O3', '-std=c++17', '-pthread', PEAK_SRC, '-o', PEAK_BIN], { encoding: 'utf8' });
  if (r.status !== 0) return `peak microbenchmark failed to compile: ${(r.stderr || r.error?.message || '').split('\n')[0]}`;
  return null;
}

/**
 * Measures FP32 FMA peak (1 thread and `threads` threads, per ISA) and memory bandwidth, and beside
 * them the AVX512_BF16 dot product (VDPBF16PS zmm, 64 FLOP each) and the latency of both.
 * Returns { available, reason?, fma, bandwidth, gflops (best ISA at `threads`), gbs (best of
 * copy/triad/read), compiler, bf16Dot (the raw figures, or { available: false, reason }),
 * bf16DotGflops1Thread, bf16DotGflopsAllThreads, bf16DotLatencyNs (null when skipped),
 * bf16DotReason (why skipped, else null), fmaLatencyNs (ns per dependent FMA, widest ISA) }.
 * %peak stays against the FP32 FMA peak.
 */
export function measurePeak({ threads, quick, log }) {
  const reason = buildPeak(log);
  if (reason) return { available: false, reason };
  log(`measuring FMA and BF16 dot peak, their latency, and memory bandwidth (${threads} threads) ...`);
  const args = ['--threads', String(threads), '--ms', quick ? '120' : '300', '--mib', quick ? '128' : '512'];
  const r = spawnSync(PEAK_BIN, args, { encoding: 'utf8' });
  if (r.status !== 0) return { available: false, reason: `peak microbenchmark failed: ${r.stderr || r.error?.message}` };
  let j;
  try {
    j = JSON.parse(r.stdout);
  } catch {
    return { available: false, reason: `peak microbenchmark printed no JSON: ${r.stdout.slice(0, 200)}` };
  }
  const isas = Object.entries(j.fma);
  // FMA chains share nothing between cores, so all threads should reach ~threads x one thread.
  // When another tenant held a core through every attempt, the measured figure would flatter
  // every %peak; use threads x the 1-thread peak instead and say so.
  for (const [, v] of isas) {
    v.disturbed = j.threads > 1 && v.gflops_all < 0.85 * v.gflops_1t * j.threads;
    v.gflops_used = v.disturbed ? +(v.gflops_1t * j.threads).toFixed(1) : v.gflops_all;
  }
  const best = isas.reduce((a, [, v]) => Math.max(a, v.gflops_used), 0);
  const bw = j.bandwidth;
  // Older peak binaries (built before the bf16 figures) print no bf16_dot; say so rather than fail.
  const bf16 = j.bf16_dot ?? { available: false, reason: 'not measured by this peak binary' };
  if (bf16.available) {
    bf16.disturbed = j.threads > 1 && bf16.gflops_all < 0.85 * bf16.gflops_1t * j.threads;
    bf16.gflops_used = bf16.disturbed ? +(bf16.gflops_1t * j.threads).toFixed(1) : bf16.gflops_all;
  }
  return {
    available: true,
    reason: isas.length ? undefined : 'no AVX2/AVX-512 FMA on this CPU: FMA peak unknown',
    threads: j.threads,
    fma: j.fma,
    bandwidth: bw,
    gflops: best || null,
    // Decode only reads; the best of the three streams is the strictest yardstick.
    gbs: Math.max(bw.copy_gbs, bw.triad_gbs, bw.read_gbs),
    compiler: compilerVersion(),
    bf16Dot: bf16,
    bf16DotGflops1Thread: bf16.available ? bf16.gflops_1t : null,
    bf16DotGflopsAllThreads: bf16.available ? bf16.gflops_all : null,
    bf16DotLatencyNs: bf16.available ? bf16.latency_ns : null,
    bf16DotReason: bf16.available ? null : bf16.reason,
    // The first ISA is the widest (avx512, else avx2).
    fmaLatencyNs: isas[0]?.[1].latency_ns ?? null,
  };
}
