// onnxruntime-node peers, each a one-node (or four-node) graph built in code, fed the bench's
// inputs converted to the layout the operator wants before any timing starts.
//
//   ort-mha    com.microsoft.MultiHeadAttention, Q/K/V as [B, S, H*D]: the CPU flash path when
//              not causal; `unidirectional` makes it causal (and, in 1.30, unfused).
//   ort-plain  MatMul -> Mul(scale) -> [Add(causal mask)] -> Softmax -> MatMul on [B, H, S, D].
//   ort-gqa    com.microsoft.GroupQueryAttention (always causal): prompt mode for causal and for
//              the sliding window (local_window_size), decode mode with a shared KV buffer.
import os from 'node:os';
import { DataType, model, node, tensor, valueInfo } from './onnx-proto.mjs';
import { windowBounds } from '../visibility.mjs';

let ortModule;
let ortError;
/** Loads onnxruntime-node once; returns null and remembers why if it cannot. */
export async function loadOrt() {
  if (ortModule || ortError) return ortModule ?? null;
  try {
    const mod = await import('onnxruntime-node');
    ortModule = mod.default ?? mod;
    return ortModule;
  } catch (e) {
    ortError = `onnxruntime-node not loadable (${String(e.message ?? e).split('\n')[0]})`;
    return null;
  }
}
export const ortLoadError = () => ortError;
export const ortVersion = () => ortModule?.env?.versions?.common ?? ortModule?.env?.versions?.node ?? null;

const F = DataType.FLOAT;

/** [B, H, S, D] -> [B, S, H*D]. */
export function bhsdToBsnh(x, B, H, S, D) {
  const y = new Float32Array(x.length);
  for (let b = 0; b < B; b++)
    for (let h = 0; h < H; h++)
      for (let s = 0; s < S; s++) {
        const src = ((b * H + h) * S + s) * D;
        y.set(x.subarray(src, src + D), ((b * S + s) * H + h) * D);
      }
  return y;
}

/** [B, S, H*D] -> [B, H, S, D]. */
export function bsnhToBhsd(y, B, H, S, D) {
  const x = new Float32Array(y.length);
  for (let b = 0; b < B; b++)
    for (let s = 0; s < S; s++)
      for (let h = 0; h < H; h++) {
        const src = ((b * S + s) * H + h) * D;
        x.set(y.subarray(src, src + D), ((b * H + h) * S + s) * D);
      }
  return x;
}

function scaleOf(c) {
  return c.scale ?? 1 / Math.sqrt(c.headDim);
}

function sessionOptions(threads) {
  // intraOpNumThreads must be explicit: its default used one thread on the 2-core dev machine.
  // allow_spinning '0': onnxruntime's idle threads otherwise spin after each run and slow whatever
  // runs next by about a third (our call timed right after one: 69-71 ms against 50-53 alone),
  // while onnxruntime itself is no slower without it (50.6-50.7 against 51.2-51.3 ms).
  return {
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    graphOptimizationLevel: 'all',
    executionMode: 'sequential',
    extra: { session: { intra_op: { allow_spinning: '0' } } },
  };
}

async function createSession(ort, bytes, threads) {
  return ort.InferenceSession.create(bytes, sessionOptions(threads));
}

function mhaGraph(c) {
  const { batch: B, heads: H, seqLen: S, headDim: D } = c;
  const L = c.kvSeqLen ?? S;
  const attrs = { num_heads: H, scale: { float: scaleOf(c) } };
  if (c.causal) attrs.unidirectional = 1;
  return model({
    nodes: [node('MultiHeadAttention', ['q', 'k', 'v'], ['out'], attrs, 'com.microsoft')],
    inputs: [valueInfo('q', F, [B, S, H * D]), valueInfo('k', F, [B, L, H * D]), valueInfo('v', F, [B, L, H * D])],
    outputs: [valueInfo('out', F, [B, S, H * D])],
  });
}

function plainGraph(c) {
  const { batch: B, heads: H, seqLen: S, headDim: D } = c;
  const L = c.kvSeqLen ?? S;
  const nodes = [
    node('Transpose', ['k'], ['kt'], { perm: [0, 1, 3, 2] }),
    node('MatMul', ['q', 'kt'], ['qk']),
    node('Mul', ['qk', 'scale'], ['scores']),
  ];
  const initializers = [tensor('scale', F, [], Float32Array.of(scaleOf(c)))];
  let logits = 'scores';
  if (c.causal) {
    // Bottom-right aligned causal mask, as in the package: query i sees keys j <= i + L - S.
    const mask = new Float32Array(S * L);
    for (let i = 0; i < S; i++) mask.fill(-Infinity, i * L + Math.min(L, i + L - S + 1), (i + 1) * L);
    initializers.push(tensor('mask', F, [S, L], mask));
    nodes.push(node('Add', ['scores', 'mask'], ['masked']));
    logits = 'masked';
  }
  nodes.push(node('Softmax', [logits], ['probs'], { axis: -1 }), node('MatMul', ['probs', 'v'], ['out']));
  return model({
    nodes,
    initializers,
    inputs: [valueInfo('q', F, [B, H, S, D]), valueInfo('k', F, [B, H, L, D]), valueInfo('v', F, [B, H, L, D])],
    outputs: [valueInfo('out', F, [B, H, S, D])],
  });
}

// GroupQueryAttention inputs: query, key, value, past_key, past_value, seqlens_k (total - 1 per
// batch item, int32), total_sequence_length (int32 scalar). Outputs: output, present_key/value.
function gqaGraph(c, { decode, localWindow }) {
  const { batch: B, heads: H, seqLen: S, headDim: D } = c;
  const KH = c.kvHeads ?? H;
  const L = c.kvSeqLen ?? S;
  const attrs = { num_heads: H, kv_num_heads: KH, scale: { float: scaleOf(c) } };
  if (localWindow !== undefined) attrs.local_window_size = localWindow;
  const newKv = decode ? S : L;
  const inputs = [valueInfo('q', F, [B, S, H * D]), valueInfo('k', F, [B, newKv, KH * D]), valueInfo('v', F, [B, newKv, KH * D])];
  if (decode) inputs.push(valueInfo('past_k', F, [B, KH, L, D]), valueInfo('past_v', F, [B, KH, L, D]));
  inputs.push(valueInfo('seqlens_k', DataType.INT32, [B]), valueInfo('total', DataType.INT32, []));
  return model({
    nodes: [
      node(
        'GroupQueryAttention',
        ['q', 'k', 'v', decode ? 'past_k' : '', decode ? 'past_v' : '', 'seqlens_k', 'total'],
        ['out', 'present_k', 'present_v'],
        attrs,
        'com.microsoft',
      ),
    ],
    inputs,
    outputs: [
      valueInfo('out', F, [B, S, H * D]),
      valueInfo('present_k', F, [B, KH, L, D]),
      valueInfo('present_v', F, [B, KH, L, D]),
    ],
  });
}

/** Estimated bytes of the dense score tensor a graph without a fused kernel materialises. */
export function scoreBytes(c) {
  return c.batch * c.heads * c.seqLen * (c.kvSeqLen ?? c.seqLen) * 4;
}

const GiB = 2 ** 30;

/**
 * The onnxruntime peers. Each: { name, why(c) -> reason it cannot run this case or null,
 * prepare(ort, c, inputs, threads) -> { run(): Promise, output(): Float32Array bhsd, dispose() } }.
 */
export const ortPeers = [
  {
    name: 'ort-mha',
    why(c) {
      if (c.op !== 'full') return 'MultiHeadAttention has no window or global tokens';
      if ((c.kvHeads ?? c.heads) !== c.heads) return 'MultiHeadAttention needs kvHeads == heads';
      return null;
    },
    async prepare(ort, c, { q, k, v }, threads) {
      const { batch: B, heads: H, seqLen: S, headDim: D } = c;
      const L = c.kvSeqLen ?? S;
      const session = await createSession(ort, mhaGraph(c), threads);
      const feeds = {
        q: new ort.Tensor('float32', bhsdToBsnh(q, B, H, S, D), [B, S, H * D]),
        k: new ort.Tensor('float32', bhsdToBsnh(k, B, H, L, D), [B, L, H * D]),
        v: new ort.Tensor('float32', bhsdToBsnh(v, B, H, L, D), [B, L, H * D]),
      };
      let last;
      return {
        run: async () => {
          last = await session.run(feeds);
        },
        output: () => bsnhToBhsd(last.out.data, B, H, S, D),
        dispose: () => session.release(),
      };
    },
  },
  {
    name: 'ort-plain',
    why(c) {
      if (c.op !== 'full') return 'the plain graph has no window or global tokens';
      if ((c.kvHeads ?? c.heads) !== c.heads) return 'the plain graph needs kvHeads == heads';
      if (scoreBytes(c) > 2 * GiB) return `score tensor would be ${(scoreBytes(c) / GiB).toFixed(1)} GiB`;
      return null;
    },
    async prepare(ort, c, { q, k, v }, threads) {
      const { batch: B, heads: H, seqLen: S, headDim: D } = c;
      const L = c.kvSeqLen ?? S;
      const session = await createSession(ort, plainGraph(c), threads);
      const feeds = {
        q: new ort.Tensor('float32', q, [B, H, S, D]),
        k: new ort.Tensor('float32', k, [B, H, L, D]),
        v: new ort.Tensor('float32', v, [B, H, L, D]),
      };
      let last;
      return {
        run: async () => {
          last = await session.run(feeds);
        },
        output: () => last.out.data,
        dispose: () => session.release(),
      };
    },
  },
  {
    name: 'ort-gqa',
    why(c) {
      if (!c.causal && c.seqLen !== 1) return 'GroupQueryAttention is causal only';
      if (c.globalTokens?.length) return 'GroupQueryAttention has no global tokens';
      const [, right] = windowBounds(c.window);
      if (c.window !== undefined && !(right === 0 || right === -1)) return 'GroupQueryAttention windows are left-only';
      const L = c.kvSeqLen ?? c.seqLen;
      if (c.seqLen !== L && c.seqLen !== 1) return 'GroupQueryAttention prompt needs seqLen == kvSeqLen';
      // CPU GroupQueryAttention allocates every score, B x H x S x L floats, for any window.
      if (scoreBytes(c) > 0.4 * os.totalmem())
        return `its score buffer would be ${(scoreBytes(c) / GiB).toFixed(1)} GiB, over 40% of this machine's memory`;
      return null;
    },
    async prepare(ort, c, { q, k, v }, threads) {
      const { batch: B, heads: H, seqLen: S, headDim: D } = c;
      const KH = c.kvHeads ?? H;
      const L = c.kvSeqLen ?? S;
      // onnxruntime 1.30's CPU GroupQueryAttention keeps the last local_window_size keys
      // (HF sliding_window), so the package's window [W, 0] is local_window_size W + 1. Older
      // releases kept W + 1 keys for W; the output check before timing catches such a drift.
      const [left] = windowBounds(c.window);
      const localWindow = left >= 0 ? left + 1 : undefined;
      const decode = S === 1 && L > 1;
      const session = await createSession(ort, gqaGraph(c, { decode, localWindow }), threads);
      const seqlens = new ort.Tensor('int32', new Int32Array(B).fill(L - 1), [B]);
      const total = new ort.Tensor('int32', Int32Array.of(L), []);
      const feeds = { q: new ort.Tensor('float32', bhsdToBsnh(q, B, H, S, D), [B, S, H * D]), seqlens_k: seqlens, total };
      let fetches;
      if (decode) {
        // Decode: the KV cache is already [B, KH, L, D] (BNSH), our layout. Pass it as past_* and
        // bind the same tensors as present_* so onnxruntime takes its shared-buffer path (no copy
        // of the cache per call); the new token is the cache's last row, written back in place.
        const lastRow = (x) => {
          const y = new Float32Array(B * KH * D);
          for (let b = 0; b < B; b++)
            for (let h = 0; h < KH; h++) {
              const src = ((b * KH + h) * L + L - 1) * D;
              y.set(x.subarray(src, src + D), (b * KH + h) * D);
            }
          return bhsdToBsnh(y, B, KH, 1, D);
        };
        const pk = new ort.Tensor('float32', k, [B, KH, L, D]);
        const pv = new ort.Tensor('float32', v, [B, KH, L, D]);
        Object.assign(feeds, {
          k: new ort.Tensor('float32', lastRow(k), [B, 1, KH * D]),
          v: new ort.Tensor('float32', lastRow(v), [B, 1, KH * D]),
          past_k: pk,
          past_v: pv,
        });
        fetches = { out: null, present_k: pk, present_v: pv };
      } else {
        feeds.k = new ort.Tensor('float32', bhsdToBsnh(k, B, KH, L, D), [B, L, KH * D]);
        feeds.v = new ort.Tensor('float32', bhsdToBsnh(v, B, KH, L, D), [B, L, KH * D]);
      }
      let last;
      return {
        label: localWindow !== undefined ? `ort-gqa lws=${localWindow}` : 'ort-gqa',
        run: async () => {
          last = fetches ? await session.run(feeds, fetches) : await session.run(feeds);
        },
        output: () => bsnhToBhsd(last.out.data, B, H, S, D),
        dispose: () => session.release(),
      };
    },
  },
];
