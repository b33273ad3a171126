// Issue 5's speed targets, evaluated on one run's results. Each is computed only from cases that
// ran and passed their check; anything missing reads "n/a" with what was missing, never a guess.

/** The backend the targets speak for: the first native CPU backend, else js. */
export function primaryBackend(backends) {
  return backends.find((b) => b === 'avx512' || b === 'avx2' || b === 'scalar') ?? backends.find((b) => b === 'js') ?? null;
}

export function evaluateTargets(results, primary, asyncCost = []) {
  const ok = (caseId, impl) => results.find((r) => r.case === caseId && r.impl === impl && r.status === 'ok');
  const targets = [];
  const add = (id, text, compute) => {
    let t;
    try {
      t = compute();
    } catch (e) {
      t = { missing: e.message };
    }
    targets.push({ id, text, ...t, pass: t.missing ? null : t.pass });
  };
  const need = (caseId, impl) => {
    const r = ok(caseId, impl);
    if (!r) throw new Error(`${impl} on ${caseId}`);
    return r;
  };
  const P = primary ?? 'native backend';

  for (const c of ['full-h8-d64-s2048', 'full-h8-d64-s4096', 'full-h32-d128-s2048']) {
    add(`1 ${c} vs ort-mha`, `${P} >= 1.25x ort-mha throughput on ${c}`, () => {
      const ratio = need(c, P).gflops / need(c, 'ort-mha').gflops;
      return { value: `${ratio.toFixed(2)}x`, pass: ratio >= 1.25 };
    });
    add(`1 ${c} peak`, `${P} >= 65% of FMA peak on ${c}`, () => {
      const f = need(c, P).peakFraction;
      if (f == null) throw new Error('FMA peak (unknown)');
      return { value: `${(f * 100).toFixed(0)}%`, pass: f >= 0.65 };
    });
  }
  add('2 causal time', `${P} causal s4096 <= 0.55x non-causal time`, () => {
    const ratio = need('causal-h8-d64-s4096', P).ms.median / need('full-h8-d64-s4096', P).ms.median;
    return { value: `${ratio.toFixed(2)}x`, pass: ratio <= 0.55 };
  });
  add('2 causal vs ort-gqa', `${P} causal s4096 >= 1.25x ort-gqa (causal) throughput`, () => {
    const ratio = need('causal-h8-d64-s4096', P).gflops / need('causal-h8-d64-s4096', 'ort-gqa').gflops;
    return { value: `${ratio.toFixed(2)}x`, pass: ratio >= 1.25 };
  });
  const lg = (s) => `lg-h8-d64-s${s}-w256-256-g4`;
  add('3 linear', `${P} local-global t(65536) / t(8192) <= 8.5`, () => {
    const ratio = need(lg(65536), P).ms.median / need(lg(8192), P).ms.median;
    return { value: ratio.toFixed(2), pass: ratio <= 8.5 };
  });
  add('3 visible-pair throughput', `${P} local-global GFLOP/s >= 70% of full attention's (s4096), worst seqLen`, () => {
    const fullG = need('full-h8-d64-s4096', P).gflops;
    const lgs = results.filter((r) => r.impl === P && r.status === 'ok' && r.case.startsWith('lg-h8-d64-'));
    if (lgs.length === 0) throw new Error(`${P} on any local-global case`);
    const worst = Math.min(...lgs.map((r) => r.gflops)) / fullG;
    return { value: `${(worst * 100).toFixed(0)}%`, pass: worst >= 0.7 };
  });
  add('3 20x at 16384', `${P} local-global s16384 >= 20x faster than full attention`, () => {
    const ratio = need('full-h8-d64-s16384', P).ms.median / need(lg(16384), P).ms.median;
    return { value: `${ratio.toFixed(1)}x`, pass: ratio >= 20 };
  });
  add('3 window vs ort-gqa', `${P} causal window [511,0] s16384 >= 10x faster than ort-gqa local_window_size 512`, () => {
    const c = 'swa-h8-d64-s16384-w511-0';
    const ratio = need(c, 'ort-gqa').ms.median / need(c, P).ms.median;
    return { value: `${ratio.toFixed(1)}x`, pass: ratio >= 10 };
  });
  add('4 decode bandwidth', `${P} decode >= 60% of measured memory bandwidth`, () => {
    const f = need('decode-h32-kvh8-d128-s1-kvs32768', P).bwFraction;
    if (f == null) throw new Error('measured bandwidth (unknown)');
    return { value: `${(f * 100).toFixed(0)}%`, pass: f >= 0.6 };
  });
  add('5 per-call overhead', `${P} sync call, seqLen 1, headDim 64: < 5 µs`, () => {
    const us = need('tiny-h1-d64-s1', P).ms.median * 1000;
    return { value: `${us.toFixed(2)} µs`, pass: us < 5 };
  });
  add('6 js vs naive', 'js backend >= 3x naive JS on full attention s1024', () => {
    const ratio = need('full-h8-d64-s1024', 'js').gflops / need('full-h8-d64-s1024', 'naive-js').gflops;
    return { value: `${ratio.toFixed(2)}x`, pass: ratio >= 3 };
  });
  // An async call's safety copies (bench/async-cost.mjs) against the sync call, paired.
  for (const row of asyncCost.filter((r) => r.computeBound)) {
    add(`async copy ${row.case}`, `${row.backend} async call on plain arrays (inputs copied) <= 1.02x the sync call on ${row.case}`, () => {
      const ratio = row.times['async, plain arrays (copied)'].ratioToFirst;
      return { value: `${ratio.toFixed(3)}x`, pass: ratio <= 1.02 };
    });
  }
  for (const row of asyncCost) {
    add(`async shared ${row.case}`, `${row.backend} async call on SharedArrayBuffers (in place) <= 1.02x the sync call on ${row.case}`, () => {
      const ratio = row.times['async, SharedArrayBuffer (in place)'].ratioToFirst;
      return { value: `${ratio.toFixed(3)}x`, pass: ratio <= 1.02 };
    });
  }
  return targets;
}
