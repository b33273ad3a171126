// The benchmark's shapes and the ones the speed targets (targets.mjs) are stated on. A case is plain
// data; `group` is what --cases selects, `quick` marks the --quick subset. `layout` is the layout
// our calls read and write ('bhsd' unless given): a 'bshd' twin of a shape is the one compared
// with onnxruntime, whose attention operators take [batch, seq, heads·dim] as a projection
// writes it; on the bhsd original only our backends run (the bshd-within-5% target).
//
// op 'full' calls fullAttention, op 'local' calls localGlobalAttention; `measure` says which
// figures matter: 'flops' (GFLOP/s, % of FMA peak), 'bytes' (decode: GB/s of K and V read once,
// % of measured bandwidth) or 'overhead' (tiny: microseconds per call over many sync calls).

const H8 = { batch: 1, heads: 8, headDim: 64 };

function full(seqLen, extra = {}) {
  return { group: 'full', op: 'full', ...H8, seqLen, measure: 'flops', ...extra };
}

function causal(seqLen, extra = {}) {
  return { group: 'causal', op: 'full', ...H8, seqLen, causal: true, measure: 'flops', ...extra };
}

function localGlobal(seqLen, extra = {}) {
  return {
    group: 'local',
    op: 'local',
    ...H8,
    seqLen,
    window: [256, 256],
    globalTokens: [0, 1, 2, 3],
    measure: 'flops',
    ...extra,
  };
}

// Mistral-style causal sliding window of 512 keys: window [511, 0], against onnxruntime's
// GroupQueryAttention local_window_size 512 on the same inputs.
function slidingWindow(seqLen, extra = {}) {
  return { group: 'local', op: 'local', ...H8, seqLen, window: [511, 0], causal: true, measure: 'flops', ...extra };
}

/** A case's twin in the layout a projection produces; the peers run on this one. */
function bshd(c) {
  return { ...c, layout: 'bshd', quick: c.quick && c.seqLen <= 2048 };
}

/** A case whose peers run only on its bshd twin. */
function withTwin(c) {
  return [{ ...c, peersOnTwin: true }, bshd(c)];
}

/** Cases whose bshd twin also runs the half-precision variants (ours.mjs, HALF_VARIANTS). */
function withHalf(cases) {
  return cases.map((c) => (c.layout === 'bshd' ? { ...c, half: true } : c));
}

// Encoder / embedding jobs: many short sequences, BERT-base heads (12 x 64).
function encoderBatch(batch, seqLen, extra = {}) {
  return { group: 'batch', op: 'full', batch, heads: 12, headDim: 64, seqLen, measure: 'flops', ...extra };
}

export function caseId(c) {
  let kind;
  if (c.op === 'local') kind = c.globalTokens?.length ? 'lg' : 'swa';
  else if (c.group === 'decode' || c.group === 'tiny') kind = c.group;
  else kind = c.causal ? 'causal' : 'full';
  const parts = [kind];
  if (c.batch !== 1) parts.push(`b${c.batch}`);
  parts.push(`h${c.heads}`);
  if (c.kvHeads && c.kvHeads !== c.heads) parts.push(`kvh${c.kvHeads}`);
  parts.push(`d${c.headDim}`, `s${c.seqLen}`);
  if ((c.kvSeqLen ?? c.seqLen) !== c.seqLen) parts.push(`kvs${c.kvSeqLen}`);
  if (c.op === 'local') parts.push(`w${c.window[0]}-${c.window[1]}`);
  if (c.globalTokens?.length) parts.push(`g${c.globalTokens.length}`);
  if (c.layout === 'bshd') parts.push('bshd');
  return parts.join('-');
}

/** Every case of a full run; the `quick: true` ones form --quick. */
export const allCases = [
  // Full attention: the O(n^2) baseline and the onnxruntime-MHA target shapes (those in both layouts).
  full(512, { quick: true }),
  full(1024, { quick: true }),
  // Their bshd twins also run bfloat16 (the half-precision targets: against our float32 kernel
  // and onnxruntime's float32 MultiHeadAttention on the same values, in the same rounds).
  ...withHalf(withTwin(full(2048, { quick: true }))),
  ...withHalf(withTwin(full(4096))),
  ...withHalf(withTwin({ ...full(2048), heads: 32, headDim: 128 })),

  // Causal: masked tiles must be skipped (target: <= 0.55x the non-causal time at s4096).
  // The bshd s4096 twin also runs with the serving options (softcap, ALiBi, sinks; ours.mjs).
  causal(2048, { quick: true }),
  ...withHalf(withTwin(causal(4096))).map((c) => (c.layout === 'bshd' ? { ...c, serving: true } : c)),
  causal(16384), // the reference point for GroupQueryAttention's sliding window below

  // Local-global: linear in seqLen (target: t(65536) / t(8192) <= 8.5).
  localGlobal(4096, { quick: true }),
  localGlobal(8192),
  ...withHalf(withTwin(localGlobal(16384, { quick: true }))),
  localGlobal(32768),
  localGlobal(65536),
  // Full attention at the local-global lengths, for the slope chart and the 20x target at 16384.
  { ...full(8192), group: 'local', slope: true },
  { ...full(16384), group: 'local', slope: true },

  // Causal sliding window vs GroupQueryAttention local_window_size 512 (target: >= 10x).
  slidingWindow(2048, { quick: true }),
  ...withTwin(slidingWindow(16384)),

  // Short sequences in big batches (encoder and embedding jobs).
  ...withTwin(encoderBatch(32, 128, { quick: true })),
  ...withTwin(encoderBatch(16, 512)),

  // Decode: one query against a long GQA cache; memory-bound (target: >= 60% of bandwidth).
  {
    group: 'decode',
    op: 'full',
    batch: 1,
    heads: 32,
    kvHeads: 8,
    headDim: 128,
    seqLen: 1,
    kvSeqLen: 32768,
    measure: 'bytes',
    quick: true,
    half: true,
    serving: true,
  },

  // Per-call overhead of the sync API, options built per call (target: < 2 us per call).
  { group: 'tiny', op: 'full', batch: 1, heads: 1, headDim: 64, seqLen: 1, measure: 'overhead', quick: true },
].map((c) => ({ ...c, id: caseId(c) }));

// 'async' has no entries here: its paired sync/async timings are bench/async-cost.mjs's.
// 'varlen' likewise: bench/varlen.mjs.
export const groups = ['full', 'causal', 'local', 'batch', 'decode', 'tiny', 'async', 'varlen'];

/** The cases a run will execute. */
export function selectCases({ quick, groups: wanted }) {
  return allCases.filter((c) => (!quick || c.quick) && (!wanted || wanted.includes(c.group)));
}

/** Options for the package call (the bench-only fields stripped). */
export function callOptions(c) {
  const o = { batch: c.batch, heads: c.heads, seqLen: c.seqLen, headDim: c.headDim };
  if (c.layout === 'bshd') o.layout = 'bshd';
  if (c.kvHeads !== undefined) o.kvHeads = c.kvHeads;
  if (c.kvSeqLen !== undefined) o.kvSeqLen = c.kvSeqLen;
  if (c.causal) o.causal = true;
  if (c.op === 'local') {
    o.window = c.window;
    if (c.globalTokens) o.globalTokens = c.globalTokens;
  }
  return o;
}
