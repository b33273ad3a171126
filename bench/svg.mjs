// Two hand-written SVG charts (no dependencies, so the bench installs nothing extra):
//   timeVsSeqLen: log-log time against seqLen, full vs local-global, with fitted slopes, so
//                 O(n^2) and O(n) read as two gradients (2 and 1);
//   throughputBars: GFLOP/s per case, one bar per backend and peer, with the FMA peak marked.

const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b', '#e377c2', '#17becf', '#7f7f7f', '#bcbd22'];

const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

/** A stable colour per implementation name across both charts. */
export function colours(names) {
  const map = new Map();
  names.forEach((n, i) => map.set(n, PALETTE[i % PALETTE.length]));
  return map;
}

function text(x, y, s, attrs = '') {
  return `<text x="${x.toFixed(1)}" y="${y.toFixed(1)}" ${attrs}>${esc(s)}</text>`;
}

/** Least-squares slope of log(y) on log(x): 2 for O(n^2), 1 for O(n). */
export function logSlope(points) {
  if (points.length < 2) return null;
  const xs = points.map((p) => Math.log(p.x));
  const ys = points.map((p) => Math.log(p.y));
  const mx = xs.reduce((a, b) => a + b) / xs.length;
  const my = ys.reduce((a, b) => a + b) / ys.length;
  let num = 0;
  let den = 0;
  for (let i = 0; i < xs.length; i++) {
    num += (xs[i] - mx) * (ys[i] - my);
    den += (xs[i] - mx) ** 2;
  }
  return den ? num / den : null;
}

function fmtTime(ms) {
  if (ms >= 1000) return `${+(ms / 1000).toPrecision(3)} s`;
  if (ms >= 1) return `${+ms.toPrecision(3)} ms`;
  return `${+(ms * 1000).toPrecision(3)} µs`;
}

/**
 * series: [{ name, impl, dashed, points: [{x: seqLen, y: ms}] }]. Returns an SVG string.
 */
export function timeVsSeqLen(series, { title, colourOf }) {
  const W = 860;
  const H = 460;
  const m = { l: 70, r: 300, t: 40, b: 50 };
  const pts = series.flatMap((s) => s.points);
  if (pts.length === 0) return emptyChart(W, 120, title, 'no full or local-global results in this run');
  const lx0 = Math.floor(Math.log2(Math.min(...pts.map((p) => p.x))));
  const lx1 = Math.ceil(Math.log2(Math.max(...pts.map((p) => p.x))));
  const ly0 = Math.floor(Math.log10(Math.min(...pts.map((p) => p.y))));
  const ly1 = Math.ceil(Math.log10(Math.max(...pts.map((p) => p.y))));
  const X = (x) => m.l + ((Math.log2(x) - lx0) / Math.max(1, lx1 - lx0)) * (W - m.l - m.r);
  const Y = (y) => H - m.b - ((Math.log10(y) - ly0) / Math.max(1, ly1 - ly0)) * (H - m.t - m.b);
  const out = [svgOpen(W, H), text(W / 2 - m.r / 2, 22, title, 'text-anchor="middle" font-size="15" font-weight="bold"')];
  for (let e = lx0; e <= lx1; e++) {
    const x = X(2 ** e);
    out.push(`<line x1="${x}" y1="${m.t}" x2="${x}" y2="${H - m.b}" stroke="#e5e5e5"/>`);
    out.push(text(x, H - m.b + 16, 2 ** e, 'text-anchor="middle"'));
  }
  for (let e = ly0; e <= ly1; e++) {
    const y = Y(10 ** e);
    out.push(`<line x1="${m.l}" y1="${y}" x2="${W - m.r}" y2="${y}" stroke="#e5e5e5"/>`);
    out.push(text(m.l - 6, y + 4, fmtTime(10 ** e), 'text-anchor="end"'));
  }
  out.push(`<rect x="${m.l}" y="${m.t}" width="${W - m.l - m.r}" height="${H - m.t - m.b}" fill="none" stroke="#999"/>`);
  out.push(text((m.l + W - m.r) / 2, H - 12, 'seqLen (log scale)', 'text-anchor="middle"'));
  out.push(text(16, (m.t + H - m.b) / 2, 'median time per call (log scale)', `text-anchor="middle" transform="rotate(-90 16 ${(m.t + H - m.b) / 2})"`));
  series.forEach((s, i) => {
    const c = colourOf(s.impl);
    const p = [...s.points].sort((a, b) => a.x - b.x);
    const d = p.map((q, j) => `${j ? 'L' : 'M'}${X(q.x).toFixed(1)},${Y(q.y).toFixed(1)}`).join(' ');
    out.push(`<path d="${d}" fill="none" stroke="${c}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6 4"' : ''}/>`);
    for (const q of p) out.push(`<circle cx="${X(q.x).toFixed(1)}" cy="${Y(q.y).toFixed(1)}" r="3.5" fill="${c}"/>`);
    const slope = logSlope(p);
    const ly = m.t + 10 + i * 20;
    const lx = W - m.r + 14;
    out.push(`<line x1="${lx}" y1="${ly}" x2="${lx + 24}" y2="${ly}" stroke="${c}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6 4"' : ''}/>`);
    out.push(text(lx + 30, ly + 4, `${s.name}${slope === null ? '' : `  (slope ${slope.toFixed(2)})`}`));
  });
  out.push(text(W - m.r + 14, m.t + 20 + series.length * 20, 'slope 2 = O(n²), 1 = O(n)', 'fill="#666"'));
  out.push('</svg>');
  return out.join('\n');
}

/**
 * groups: [{ label, bars: [{ impl, value, note? }] }] with value in GFLOP/s (null = no bar, note
 * shown instead). peak: GFLOP/s line or null.
 */
export function throughputBars(groups, { title, colourOf, peak, unit = 'GFLOP/s' }) {
  const W = 860;
  const barH = 14;
  const gap = 12;
  const m = { l: 250, r: 110, t: 46, b: 40 };
  const rows = groups.reduce((n, g) => n + g.bars.length, 0);
  if (rows === 0) return emptyChart(W, 120, title, 'no throughput results in this run');
  const H = m.t + m.b + rows * barH + groups.length * gap;
  const vmax = Math.max(peak ?? 0, ...groups.flatMap((g) => g.bars.map((b) => b.value ?? 0))) * 1.05 || 1;
  const X = (v) => m.l + (v / vmax) * (W - m.l - m.r);
  const out = [svgOpen(W, H), text(W / 2, 22, title, 'text-anchor="middle" font-size="15" font-weight="bold"')];
  const step = niceStep(vmax / 6);
  for (let v = 0; v <= vmax; v += step) {
    out.push(`<line x1="${X(v)}" y1="${m.t - 6}" x2="${X(v)}" y2="${H - m.b}" stroke="#e5e5e5"/>`);
    out.push(text(X(v), H - m.b + 16, +v.toPrecision(4), 'text-anchor="middle"'));
  }
  out.push(text((m.l + W - m.r) / 2, H - 8, unit, 'text-anchor="middle"'));
  let y = m.t;
  for (const g of groups) {
    out.push(text(m.l - 8, y + (g.bars.length * barH) / 2 + 4, g.label, 'text-anchor="end" font-weight="bold"'));
    for (const b of g.bars) {
      const c = colourOf(b.impl);
      if (b.value != null) {
        out.push(`<rect x="${m.l}" y="${y + 1}" width="${Math.max(1, X(b.value) - m.l).toFixed(1)}" height="${barH - 2}" fill="${c}"/>`);
        out.push(text(X(b.value) + 4, y + barH - 3, `${b.impl} ${b.value.toFixed(1)}`, 'font-size="11"'));
      } else {
        out.push(text(m.l + 4, y + barH - 3, `${b.impl}: ${b.note}`, 'font-size="11" fill="#999"'));
      }
      y += barH;
    }
    y += gap;
  }
  if (peak) {
    out.push(`<line x1="${X(peak)}" y1="${m.t - 6}" x2="${X(peak)}" y2="${H - m.b}" stroke="#000" stroke-dasharray="4 3"/>`);
    out.push(text(X(peak), m.t - 10, `FMA peak ${peak.toFixed(0)}`, 'text-anchor="middle" font-size="11"'));
  }
  out.push('</svg>');
  return out.join('\n');
}

function niceStep(x) {
  const p = 10 ** Math.floor(Math.log10(x));
  for (const f of [1, 2, 5, 10]) if (f * p >= x) return f * p;
  return 10 * p;
}

function svgOpen(W, H) {
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">\n<rect width="${W}" height="${H}" fill="#fff"/>`;
}

function emptyChart(W, H, title, message) {
  return `${svgOpen(W, H)}\n${text(W / 2, 30, title, 'text-anchor="middle" font-size="15" font-weight="bold"')}\n${text(W / 2, 70, message, 'text-anchor="middle" fill="#999"')}\n</svg>`;
}

/** Both charts for one run, keyed by file name. */
export function chartsFor(results, cases, implNames, peak) {
  const colourOf = ((m) => (n) => m.get(n) ?? '#333')(colours(implNames));
  const ok = results.filter((r) => r.status === 'ok');
  const seqOf = new Map(cases.map((c) => [c.id, c.seqLen]));
  const series = [];
  for (const impl of implNames) {
    for (const [name, match, dashed] of [
      ['full', (id) => /^full-h8-d64-s\d+$/.test(id), false],
      ['local-global', (id) => id.startsWith('lg-h8-d64-'), true],
    ]) {
      const points = ok.filter((r) => r.impl === impl && match(r.case)).map((r) => ({ x: seqOf.get(r.case), y: r.ms.median }));
      if (points.length >= 2) series.push({ name: `${name} · ${impl}`, impl, dashed, points });
    }
  }
  const groups = cases
    .filter((c) => c.measure === 'flops')
    .map((c) => ({
      label: c.id,
      bars: results
        .filter((r) => r.case === c.id && (r.status === 'ok' || r.status === 'failed'))
        .map((r) => ({ impl: r.label ?? r.impl, value: r.status === 'ok' ? r.gflops : null, note: 'FAILED check' })),
    }))
    .filter((g) => g.bars.length);
  return {
    'time-vs-seqlen.svg': timeVsSeqLen(series, { title: 'Time vs seqLen: full (O(n²)) vs local-global (O(n)), b1 h8 d64', colourOf }),
    'throughput.svg': throughputBars(groups, {
      title: 'Throughput (useful GFLOP/s) per backend and peer',
      colourOf: (n) => colourOf(n.split(' ')[0]),
      peak: peak.gflops,
    }),
  };
}
