// The speed targets, evaluated on one run's results. Each is computed only from cases that ran and
// passed their check; anything missing reads "n/a" with what was missing, never a guess. A target
// is named by what it measures. Ratios between implementations come from one case, where they were
// timed interleaved (bench/cli.mjs); ratios between cases (causal against full, t(65536)/t(8192))
// are between medians of the same run.

/** The backend the targets speak for: the first native CPU backend, else js. */
export function primaryBackend(backends) {
  return backends.find((b) => b === 'avx512' || b === 'avx2' || b === 'neon' || b === 'scalar') ?? backends.find((b) => b === 'js') ?? null;
}

export function evaluateTargets(results, primary, asyncCost = [], asyncSubmission = null, varlen = null) {
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
  const peakOf = (caseId) => {
    const f = need(caseId, P).peakFraction;
    if (f == null) throw new Error('FMA peak (unknown)');
    return f;
  };
  const P = primary ?? 'native backend';
  const pct = (f) => `${(f * 100).toFixed(0)}%`;

  for (const c of ['full-h8-d64-s2048-bshd', 'full-h8-d64-s4096-bshd', 'full-h32-d128-s2048-bshd']) {
    add(`full vs ort-mha ${c}`, `${P} >= 1.10x onnxruntime MultiHeadAttention throughput on ${c}`, () => {
      const ratio = need(c, P).gflops / need(c, 'ort-mha').gflops;
      return { value: `${ratio.toFixed(2)}x`, pass: ratio >= 1.1 };
    });
    add(`full peak ${c}`, `${P} >= 85% of the FMA peak on ${c}`, () => {
      const f = peakOf(c);
      return { value: pct(f), pass: f >= 0.85 };
    });
  }
  // Every bshd case, against the same backend reading bhsd in the same rounds.
  for (const r of results.filter((x) => x.impl === P && x.layout === 'bshd' && x.status === 'ok' && x.group !== 'batch')) {
    add(`bshd vs bhsd ${r.case}`, `${P} bshd within 5% of bhsd on ${r.case}`, () => {
      const ratio = r.ms.median / need(r.case, `${P} bhsd`).ms.median;
      return { value: `${ratio.toFixed(3)}x`, pass: ratio <= 1.05 };
    });
  }
  add('causal time', `${P} causal s4096 (bshd) <= 0.55x its non-causal time`, () => {
    const ratio = need('causal-h8-d64-s4096-bshd', P).ms.median / need('full-h8-d64-s4096-bshd', P).ms.median;
    return { value: `${ratio.toFixed(2)}x`, pass: ratio <= 0.55 };
  });
  add('causal vs ort-gqa', `${P} causal s4096 (bshd) >= 1.3x onnxruntime GroupQueryAttention throughput`, () => {
    const ratio = need('causal-h8-d64-s4096-bshd', P).gflops / need('causal-h8-d64-s4096-bshd', 'ort-gqa').gflops;
    return { value: `${ratio.toFixed(2)}x`, pass: ratio >= 1.3 };
  });
  for (const [c, floor] of [['full-b32-h12-d64-s128-bshd', 0.65], ['full-b16-h12-d64-s512-bshd', 0.8]]) {
    add(`batch peak ${c}`, `${P} >= ${pct(floor)} of the FMA peak on ${c}`, () => {
      const f = peakOf(c);
      return { value: pct(f), pass: f >= floor };
    });
    add(`batch vs ort-mha ${c}`, `${P} >= 1.3x onnxruntime MultiHeadAttention throughput on ${c}`, () => {
      const ratio = need(c, P).gflops / need(c, 'ort-mha').gflops;
      return { value: `${ratio.toFixed(2)}x`, pass: ratio >= 1.3 };
    });
  }
  const lg = (s) => `lg-h8-d64-s${s}-w256-256-g4`;
  add('local-global linear', `${P} local-global t(65536) / t(8192) <= 8.5`, () => {
    const ratio = need(lg(65536), P).ms.median / need(lg(8192), P).ms.median;
    return { value: ratio.toFixed(2), pass: ratio <= 8.5 };
  });
  add('local-global visible-pair throughput', `${P} local-global GFLOP/s >= 70% of full attention's (s4096), worst seqLen`, () => {
    const fullG = need('full-h8-d64-s4096', P).gflops;
    const lgs = results.filter((r) => r.impl === P && r.status === 'ok' && r.case.startsWith('lg-h8-d64-'));
    if (lgs.length === 0) throw new Error(`${P} on any local-global case`);
    const worst = Math.min(...lgs.map((r) => r.gflops)) / fullG;
    return { value: pct(worst), pass: worst >= 0.7 };
  });
  add('local-global 20x at 16384', `${P} local-global s16384 >= 20x faster than full attention`, () => {
    const ratio = need('full-h8-d64-s16384', P).ms.median / need(lg(16384), P).ms.median;
    return { value: `${ratio.toFixed(1)}x`, pass: ratio >= 20 };
  });
  add('sliding window vs ort-gqa', `${P} causal window [511,0] s16384 (bshd) >= 10x faster than onnxruntime GroupQueryAttention local_window_size 512`, () => {
    const c = 'swa-h8-d64-s16384-w511-0-bshd';
    const ratio = need(c, 'ort-gqa').ms.median / need(c, P).ms.median;
    return { value: `${ratio.toFixed(1)}x`, pass: ratio >= 10 };
  });
  add('decode bandwidth', `${P} decode >= 60% of measured memory bandwidth`, () => {
    const f = need('decode-h32-kvh8-d128-s1-kvs32768', P).bwFraction;
    if (f == null) throw new Error('measured bandwidth (unknown)');
    return { value: pct(f), pass: f >= 0.6 };
  });
  // Half precision (bench/ours.mjs HALF_VARIANTS), each ratio from one case's interleaved rounds.
  const bf16 = `${P} bf16`;
  const bf16Products = `${P} f32 in, bf16 products`;
  const halfFull = ['full-h8-d64-s2048-bshd', 'full-h8-d64-s4096-bshd', 'full-h32-d128-s2048-bshd'];
  const speedup = (c, impl) => need(c, impl).gflops / need(c, P).gflops;
  for (const c of halfFull) {
    add(`bf16 vs f32 ${c}`, `${bf16} >= 1.6x our float32 throughput on ${c}`, () => {
      const ratio = speedup(c, bf16);
      return { value: `${ratio.toFixed(2)}x`, pass: ratio >= 1.6 };
    });
    add(`bf16 vs ort-mha ${c}`, `${bf16} >= 1.5x onnxruntime MultiHeadAttention (float32) throughput on ${c}`, () => {
      const ratio = need(c, bf16).gflops / need(c, 'ort-mha').gflops;
      return { value: `${ratio.toFixed(2)}x`, pass: ratio >= 1.5 };
    });
    add(`bf16 products vs f32 ${c}`, `${bf16Products} >= 1.4x our float32 throughput on ${c}`, () => {
      const ratio = speedup(c, bf16Products);
      return { value: `${ratio.toFixed(2)}x`, pass: ratio >= 1.4 };
    });
  }
  const decodeCase = 'decode-h32-kvh8-d128-s1-kvs32768';
  for (const impl of [bf16, `${P} f16`]) {
    add(`half decode ${impl}`, `${impl} decode <= 0.6x the time of float32 decode`, () => {
      const ratio = need(decodeCase, impl).ms.median / need(decodeCase, P).ms.median;
      return { value: `${ratio.toFixed(2)}x`, pass: ratio <= 0.6 };
    });
  }
  for (const c of ['causal-h8-d64-s4096-bshd', 'lg-h8-d64-s16384-w256-256-g4-bshd']) {
    add(`bf16 speedup ${c}`, `${bf16} speedup on ${c} within 10% of its speedup on full-h8-d64-s4096-bshd`, () => {
      const ratio = speedup(c, bf16);
      const fullRatio = speedup('full-h8-d64-s4096-bshd', bf16);
      return { value: `${ratio.toFixed(2)}x (full ${fullRatio.toFixed(2)}x)`, pass: ratio >= 0.9 * fullRatio };
    });
  }
  // The serving options (bench/ours.mjs SERVING_VARIANTS) against the same call without them.
  for (const c of ['causal-h8-d64-s4096-bshd', 'decode-h32-kvh8-d128-s1-kvs32768']) {
    for (const suffix of ['softcap', 'alibi', 'sinks', 'softcap+alibi+sinks']) {
      const impl = `${P} ${suffix}`;
      add(`serving ${suffix} ${c}`, `${impl} <= 1.10x the time of the same call without it on ${c}`, () => {
        const ratio = need(c, impl).ms.median / need(c, P).ms.median;
        return { value: `${ratio.toFixed(2)}x`, pass: ratio <= 1.1 };
      });
    }
  }
  // Packed sequences (bench/varlen.mjs), paired rounds of one run.
  const varlenTimes = (id) => {
    const row = (varlen ?? []).find((r) => r.case === id);
    if (!row?.times) throw new Error(row ? `the ${id} check (${row.check.maxAbsDiff})` : `the ${id} measurement`);
    return row.times;
  };
  for (const id of ['varlen-b16-h8-d64-s64..2048-causal', 'varlen-b16-h8-d64-s64..2048']) {
    add(`varlen vs separate ${id}`, `${P} packed batch (cuSeqlens) <= 1.10x the time of one call per sequence on ${id}`, () => {
      const ratio = 1 / varlenTimes(id)['one call per sequence'].ratioToFirst;
      return { value: `${ratio.toFixed(2)}x`, pass: ratio <= 1.1 };
    });
  }
  add('varlen vs padded', `${P} packed batch (cuSeqlens) >= 1.5x faster than the batch padded to its longest sequence (kvLengths only), non-causal`, () => {
    const ratio = varlenTimes('varlen-b16-h8-d64-s64..2048')['padded to the longest'].ratioToFirst;
    return { value: `${ratio.toFixed(2)}x`, pass: ratio >= 1.5 };
  });
  // Paged decode (bench/ours.mjs PAGED_VARIANTS) against contiguous decode of the same dtype.
  for (const [impl, base] of [[`${P} paged 16`, P], [`${P} paged 256`, P], [`${P} bf16 paged 16`, bf16], [`${P} bf16 paged 256`, bf16]]) {
    add(`paged decode ${impl}`, `${impl} decode <= 1.10x the time of contiguous decode (${base})`, () => {
      const ratio = need(decodeCase, impl).ms.median / need(decodeCase, base).ms.median;
      return { value: `${ratio.toFixed(2)}x`, pass: ratio <= 1.1 };
    });
  }
  add('tiny sync call', `${P} sync call, seqLen 1, headDim 64, options built per call: < 2 µs`, () => {
    const us = need('tiny-h1-d64-s1', P).ms.median * 1000;
    return { value: `${us.toFixed(2)} µs`, pass: us < 2 };
  });
  add('async submission', `${P} 2,000 tiny async calls submitted in one synchronous loop: < 10 ms (< 5 µs each)`, () => {
    if (!asyncSubmission) throw new Error('the async submission loop');
    return { value: `${asyncSubmission.loopMs.toFixed(2)} ms (${asyncSubmission.perCallUs.toFixed(2)} µs each)`, pass: asyncSubmission.loopMs < 10 };
  });
  add('js vs naive', 'js backend >= 3x naive JS on full attention s1024', () => {
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
